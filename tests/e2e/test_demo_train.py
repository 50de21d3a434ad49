"""End to end on the embedded demo: tools/train.py's main in-process, resume, and 2-process gloo DDP.

Shortened through --cfg-options; the data and text banks go to temp dirs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import DEMO

from alignkit.cli.train import main
from alignkit.engine.compat import load_checkpoint_file
from alignkit.export import load_adapter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo_data"))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def _args(work_dir, data_root, *options):
    return [DEMO, "--work-dir", str(work_dir), "--cfg-options", f"train_dataloader.dataset.data_root={data_root}",
            f"val_dataloader.dataset.data_root={data_root}",
            "default_hooks.logger.interval=1", *options]


def _scalars(work_dir) -> list[dict]:
    files = sorted(Path(work_dir).glob("*/vis_data/scalars.json"))
    return [json.loads(line) for line in files[-1].read_text().splitlines()]


def test_demo_trains_losses_finite_and_decreasing_and_writes_artifacts(tmp_path, data_root, capsys):
    runner = main(_args(tmp_path, data_root, "train_cfg.max_iters=12", "default_hooks.checkpoint.interval=12"))
    rows = [r for r in _scalars(tmp_path) if "loss_lm" in r]
    assert len(rows) == 12
    for r in rows:
        assert all(v == v and abs(v) != float("inf") for k, v in r.items() if isinstance(v, float))
    lm = [r["loss_lm"] for r in rows]
    total = [r["loss"] for r in rows]
    assert sum(lm[-4:]) < sum(lm[:4]) and sum(total[-4:]) < sum(total[:4])
    assert all(r["loss"] == pytest.approx(r["loss_lm"] + r["loss_align"], rel=1e-4) for r in rows)
    assert (tmp_path / "iter_12.pth").is_file()
    art = load_adapter(tmp_path / "adapter.safetensors")
    for k, v in runner.model.adapter.state_dict().items():
        assert torch.equal(art.adapter_state[k], v)
    # LLaVA's --pretrain_mm_mlp_adapter file beside it: MLPAdapter's `layers.i` is LLaVA's `model.mm_projector.i`.
    projector = torch.load(tmp_path / "mm_projector.bin", weights_only=True)
    expected = {"model.mm_projector." + k.removeprefix("layers."): v
                for k, v in runner.model.adapter.state_dict().items()}
    assert projector.keys() == expected.keys() and all(torch.equal(projector[k], expected[k]) for k in expected)
    out = capsys.readouterr().out
    assert "RANDOM" in out and str(tmp_path) in out


def test_resume_equals_an_uninterrupted_run_bitwise(tmp_path, data_root):
    # With the demo's validation on (here every 3 iterations, so right after the checkpoint at 3) and every
    # default hook: the resumed run ends with the same weights, and the same adapter.safetensors bytes.
    full, cut = tmp_path / "full", tmp_path / "cut"
    opts = ("default_hooks.checkpoint.interval=3", "train_cfg.val_interval=3", "train_cfg.val_begin=3")
    main(_args(full, data_root, "train_cfg.max_iters=6", *opts))
    main(_args(cut, data_root, "train_cfg.max_iters=3", *opts))  # stops at k = 3 with iter_3.pth
    main(_args(cut, data_root, "train_cfg.max_iters=6", *opts) + ["--resume", str(cut / "iter_3.pth")])
    a = load_checkpoint_file(str(full / "iter_6.pth"))["state_dict"]
    b = load_checkpoint_file(str(cut / "iter_6.pth"))["state_dict"]
    trained = [k for k in a if k.startswith(("adapter.", "aligner."))]
    assert trained and all(torch.equal(a[k], b[k]) for k in trained)
    assert not all(torch.equal(a[k], load_checkpoint_file(str(cut / "iter_3.pth"))["state_dict"][k]) for k in trained)
    assert "align/label_top1" in _scalars(full)[-1]  # validation ran
    assert (full / "adapter.safetensors").read_bytes() == (cut / "adapter.safetensors").read_bytes()


def test_two_gloo_processes_end_with_identical_weights(tmp_path, data_root):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "e2e"), str(ROOT)]),
               OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cfg = tmp_path / "demo_dump.py"  # the demo plus a hook that dumps every rank's weights
    cfg.write_text(
        f"_base_ = [{DEMO!r}]\n"
        "custom_imports = dict(imports=['alignkit.engine', 'alignkit.testing.demo', 'e2e_hooks'],"
        " allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='AdapterArtifactHook'), dict(type='RNGStateHook'),"
        " dict(type='alignkit_e2e.DumpTrainableHook')]\n"
    )
    args = _args(tmp_path, data_root, "train_cfg.max_iters=3", "train_dataloader.batch_size=2")
    args[0] = str(cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29613",
           str(ROOT / "tools" / "train.py"), *args, "--launcher", "pytorch"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "trainable_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "trainable_rank1.pt", weights_only=True)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["state"].keys() == r1["state"].keys() and r0["state"]
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
