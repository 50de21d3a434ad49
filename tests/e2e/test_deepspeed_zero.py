"""DeepSpeed ZeRO-2/3 on two CPU ranks (gloo), through ``tools/train.py`` and mmengine's ``FlexibleRunner``.

The demo's tiny models, its LLM loaded with ``from_pretrained`` (as a real run
loads Vicuna) so that ZeRO-3 builds it partitioned. Four launches in all:

- stage 1 with SEA under ZeRO-2 and under ZeRO-3: the word table each rank
  holds equals the one a single process builds from the same LLM; the first
  step's ``loss_align`` and ``loss_lm`` equal a single-process replay of the
  same batch from the same weights and RNG state; under ZeRO-3 the LLM is
  partitioned as it is built (each rank holds half of it) and the adapter
  after ``deepspeed.initialize``; ``adapter.safetensors`` is gathered whole;
  the validation's alignment metrics equal one process scoring the split;
- stage 2 under ZeRO-3 from that adapter, with the vision encoder training too
  at a tenth of the lr (SEA-PRIME's and Table 3's recipe), 4 iterations, and the
  same run resumed from its iteration-2 checkpoint: bitwise the same weights.

DeepSpeed compiles its shared-memory comm op with g++ on first use (about a
minute); ``TORCH_EXTENSIONS_DIR`` under ``~/.cache`` keeps it for later runs.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from alignkit.export import load_adapter
from alignkit.models.builders import build_llm
from alignkit.datasets import llava_collate
from alignkit.registry import DATASETS, METRICS, MODELS
from alignkit.testing.demo import demo_tokenizer, write_demo_data

pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed: pip install 'alignkit[deepspeed]'")
pytest.importorskip("accelerate", reason="the deepspeed extra is not installed: pip install 'alignkit[deepspeed]'")
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "projects" / "sea" / "configs" / "demo_tiny.py")
EXTENSIONS = os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "alignkit" / "torch_extensions"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Demo data, the demo LLM saved as a Hugging Face folder, one text-bank cache for every process."""
    root = tmp_path_factory.mktemp("zero")
    data = root / "data"
    write_demo_data(data)
    llm = build_llm(dict(Config.fromfile(DEMO).model.llm), demo_tokenizer(), seed=0)
    llm.save_pretrained(root / "llm")
    return dict(root=root, data=str(data), llm=str(root / "llm"), cache=str(root / "cache"))


def _config(path: Path, assets: dict, stage: int, max_iters: int, ckpt_interval: int, model: str = "",
            extra: str = "", validate: bool = False) -> Path:
    path.write_text(
        f"_base_ = [{DEMO!r}]\n"
        "custom_imports = dict(imports=['alignkit.models', 'alignkit.engine', 'alignkit.testing.demo', 'zero_probe'],"
        " allow_failed_imports=False)\n"
        # persistence threshold 0: partition even the demo's tiny tensors (the default keeps < 1e5 elements whole)
        f"strategy = dict(type='DeepSpeedStrategy', zero_optimization=dict(stage={stage},"
        " stage3_param_persistence_threshold=0, stage3_gather_16bit_weights_on_model_save=True),"
        " gradient_clipping=1.0, train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=1)\n"
        "optim_wrapper = dict(_delete_=True, type='DeepSpeedOptimWrapper',"
        f" optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0){extra})\n"
        f"model = dict(type='alignkit_zero.ZeroProbeLLaVAModel', llm=dict(pretrained={assets['llm']!r}),"
        f" autocast_dtype=None{model})\n"
        f"train_dataloader = dict(batch_size=2, dataset=dict(data_root={assets['data']!r}))\n"
        + (f"val_dataloader = dict(batch_size=2, dataset=dict(data_root={assets['data']!r}))\n"
           f"train_cfg = dict(max_iters={max_iters}, val_interval={max_iters}, val_begin={max_iters})\n"
           if validate else
           f"val_dataloader = None\nval_cfg = None\nval_evaluator = None\ntrain_cfg = dict(max_iters={max_iters})\n")
        +
        f"default_hooks = dict(checkpoint=dict(interval={ckpt_interval}), logger=dict(interval=1))\n"
        "custom_hooks = [dict(type='AdapterArtifactHook'), dict(type='RNGStateHook'),"
        " dict(type='alignkit_zero.ZeroProbeHook')]\n"
    )
    return path


def _train(assets: dict, config: Path, work_dir: Path, *extra: str) -> None:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "e2e"), str(ROOT)]),
        OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TORCH_EXTENSIONS_DIR=EXTENSIONS,
        ALIGNKIT_CACHE_DIR=assets["cache"],
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(ROOT / "tools" / "train.py"), str(config),
           "--work-dir", str(work_dir), "--launcher", "pytorch", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=assets["root"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _probe(work_dir: Path, rank: int) -> dict:
    return torch.load(work_dir / f"probe_rank{rank}.pt", weights_only=True)


def _consolidated(work_dir: Path, tag: str) -> dict:
    """The fp32 weights of a ZeRO checkpoint, gathered from every rank's partition."""
    return get_fp32_state_dict_from_zero_checkpoint(str(work_dir), tag=tag)


@pytest.fixture(scope="session")
def stage1_zero3(assets):
    work = assets["root"] / "stage1_zero3"
    _train(assets, _config(assets["root"] / "stage1_zero3.py", assets, 3, 2, 2, validate=True), work)
    return work


def _check_stage1_against_one_process(work: Path, assets: dict, monkeypatch) -> None:
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", assets["cache"])
    probes = [_probe(work, r) for r in (0, 1)]
    cfg = Config.fromfile(DEMO).model
    ref = MODELS.build(dict(cfg, llm=dict(cfg.llm, pretrained=assets["llm"]), autocast_dtype=None))
    # The table each rank built (from the gathered embedding) is the one a single process builds.
    for probe in probes:
        assert torch.equal(probe["word_table"], ref.aligner.word_table)
    # Replay each rank's first step in one process: same weights, text bank, batch and RNG state.
    ref.load_state_dict(probes[0]["state"])
    ref.aligner.labeler.bank = probes[0]["text_bank"]
    ref.aligner.labeler._banks.clear()
    ref.train()
    for probe in probes:
        torch.set_rng_state(probe["rng"])
        out = ref(**ref.data_preprocessor(probe["batch"], True), mode="loss")
        for key in ("loss_align", "loss_lm", "align_pairs_after_dedup"):
            assert float(out[key].detach()) == pytest.approx(probe["outputs"][key], rel=1e-5, abs=1e-6), key
    assert probes[0]["outputs"]["loss_align"] != probes[1]["outputs"]["loss_align"], "both ranks read one batch"


def _val_metrics(work: Path) -> dict:
    rows = [json.loads(line) for f in sorted(work.glob("*/vis_data/scalars.json")) for line in f.read_text().splitlines()]
    val = [r for r in rows if "align/label_mean_rank" in r]
    assert len(val) == 1, rows
    return {k: v for k, v in val[0].items() if k.startswith("align/")}


def _one_process_val_metrics(state: dict, text_bank, assets: dict, monkeypatch) -> dict:
    """The demo's validation split scored by one process with the given weights and the run's text bank
    (AlignmentMetric by hand)."""
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", assets["cache"])
    cfg = Config.fromfile(DEMO)
    model = MODELS.build(dict(cfg.model, llm=dict(cfg.model.llm, pretrained=assets["llm"]), autocast_dtype=None))
    model.load_state_dict(state)  # strict: every key of the model
    model.aligner.labeler.bank = text_bank  # the random text tower's bank (not in the state dict)
    model.aligner.labeler._banks.clear()
    assert model.align_evaluator.labeler is model.aligner.labeler
    model.eval()
    dataset = DATASETS.build(dict(cfg.val_dataloader.dataset, data_root=assets["data"]))
    metric = METRICS.build(dict(cfg.val_evaluator))
    for start in range(0, len(dataset), 2):
        batch = llava_collate([dataset[i] for i in range(start, min(start + 2, len(dataset)))])
        metric.process(batch, model.val_step(batch))
    return {f"align/{k}": v for k, v in metric.compute_metrics(metric.results).items()}


def _how_it_differs(got: torch.Tensor, final: torch.Tensor, middle: torch.Tensor) -> str:
    """A failure message: dtype, shape, max |Δ| to the final weights, and whether it is iteration 2's."""
    if got.shape != final.shape or got.dtype != final.dtype:
        return f"{got.dtype} {tuple(got.shape)} vs final {final.dtype} {tuple(final.shape)}"
    return (f"max |Δ| {float((got - final).abs().max()):.3g} to the final weights, "
            f"equal to iteration 2's: {torch.equal(got, middle)}")


def _check_llava_projector(work, adapter_state: dict) -> None:
    # LLaVA's mm_projector.bin beside the artifact, from the same gathered weights: MLPAdapter's `layers.i`
    # is LLaVA's `model.mm_projector.i`.
    projector = torch.load(work / "mm_projector.bin", weights_only=True)
    expected = {"model.mm_projector." + k.removeprefix("layers."): v for k, v in adapter_state.items()}
    assert projector.keys() == expected.keys()
    assert all(torch.equal(projector[k], v) for k, v in expected.items())


def test_stage1_sea_under_zero3(stage1_zero3, assets, monkeypatch):
    probes = [_probe(stage1_zero3, r) for r in (0, 1)]
    for probe in probes:
        built = probe["built_llm"]
        # Partitioned as it was built (from_pretrained under HfDeepSpeedConfig): this rank holds half the LLM.
        assert built["partitioned"] and built["local_elements"] * 2 == built["full_elements"]
        assert probe["adapter_partitioned"] and probe["world_size"] == 2
    _check_stage1_against_one_process(stage1_zero3, assets, monkeypatch)
    # The artifact is the gathered adapter (and temperature) of the last checkpoint.
    art = load_adapter(stage1_zero3 / "adapter.safetensors")
    final = _consolidated(stage1_zero3, "iter_2.pth")
    assert art.adapter_state.keys() == {k[len("adapter."):] for k in final if k.startswith("adapter.")}
    for key, value in art.adapter_state.items():
        assert torch.equal(value, final[f"adapter.{key}"]), key
    assert torch.equal(art.loss_state["logit_scale"], final["aligner.loss.logit_scale"])
    _check_llava_projector(stage1_zero3, art.adapter_state)
    # Validation ran the alignment metrics (mode='align', compat fix 8) on both ranks' halves of the split,
    # equal to one process scoring the whole split with the final weights.
    state = {**probes[0]["state"], **{k: v for k, v in final.items() if k in probes[0]["state"]}}
    got, want = _val_metrics(stage1_zero3), _one_process_val_metrics(state, probes[0]["text_bank"], assets, monkeypatch)
    assert got.keys() == want.keys() and len(got) >= 6
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_stage1_sea_under_zero2(assets, tmp_path, monkeypatch):
    _train(assets, _config(tmp_path / "stage1_zero2.py", assets, 2, 1, 1), tmp_path / "work")
    _check_stage1_against_one_process(tmp_path / "work", assets, monkeypatch)


def test_stage2_under_zero3_resumes_bitwise_and_writes_the_adapter(stage1_zero3, assets, tmp_path):
    stage1_adapter = stage1_zero3 / "adapter.safetensors"
    stage2 = dict(model=", aligner=None, align_eval=None, trainable=['adapter', 'llm', 'vision_encoder'],"
                        f" adapter_weights={str(stage1_adapter)!r}",
                  extra=", paramwise_cfg=dict(custom_keys={'vision_encoder': dict(lr_mult=0.1)})")
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _train(assets, _config(tmp_path / "full.py", assets, 3, 4, 2, **stage2), full)
    _train(assets, _config(tmp_path / "resumed.py", assets, 3, 4, 2, **stage2), resumed,
           "--resume", str(full / "iter_2.pth"))

    start = _probe(full, 0)
    assert start["built_llm"]["partitioned"] and start["adapter_partitioned"]
    for key, value in load_adapter(stage1_adapter).adapter_state.items():  # stage 2 started from stage 1's adapter
        assert torch.equal(start["state"][f"adapter.{key}"], value), key
    a, b = _consolidated(full, "iter_4.pth"), _consolidated(resumed, "iter_4.pth")
    middle = _consolidated(full, "iter_2.pth")
    trained = [k for k in a if k.startswith(("adapter.", "llm.", "vision_encoder."))]
    assert any(k.startswith("llm.") for k in trained) and any(k.startswith("vision_encoder.") for k in trained)
    assert all(torch.equal(a[k], b[k]) for k in trained)
    for part in ("adapter.", "llm.", "vision_encoder."):  # each part trained in iterations 3-4
        assert not all(torch.equal(a[k], middle[k]) for k in trained if k.startswith(part)), part
    for work, final in ((full, a), (resumed, b)):
        art = load_adapter(work / "adapter.safetensors")
        assert art.adapter_state.keys() == {k[len("adapter."):] for k in final if k.startswith("adapter.")}
        differ = {k: _how_it_differs(v, final[f"adapter.{k}"], middle[f"adapter.{k}"])
                  for k, v in art.adapter_state.items() if not torch.equal(v, final[f"adapter.{k}"])}
        assert not differ, f"{work.name}/adapter.safetensors is not the final adapter: {differ}"
        _check_llava_projector(work, art.adapter_state)
