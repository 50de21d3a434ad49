"""The plain-PyTorch example (use 3 of docs/design.md) runs, and its alignment loss goes down."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sea_step_plain_pytorch.py"


def test_plain_pytorch_example_runs_and_learns(capsys):
    spec = importlib.util.spec_from_file_location("sea_step_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first = module.main(["--steps", "1", "--seed", "3"])
    last = module.main(["--steps", "60", "--seed", "3"])
    assert last < first  # same seed, same data: 60 steps of training lowered the loss
    assert "pairs" in capsys.readouterr().out


HF_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hf_llava_sea.py"


def _load_hf_example():
    spec = importlib.util.spec_from_file_location("hf_llava_sea_example", HF_EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _single_process_env() -> dict:
    # A user's plain `python examples/hf_llava_sea.py`: no launcher variables (accelerate would start a
    # process group from any of them), offline.
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {**{k: v for k, v in os.environ.items() if k not in launcher}, "HF_HUB_OFFLINE": "1"}


def test_hf_llava_example_trains_with_the_hf_trainer():
    # As a user runs it: a fresh interpreter (pytest puts tests/ on sys.path, where tests/datasets would
    # shadow the `datasets` package the HF Trainer probes for).
    run = subprocess.run([sys.executable, str(HF_EXAMPLE), "--steps", "10", "--batch", "4", "--seed", "1"],
                         capture_output=True, text=True, timeout=600, env=_single_process_env())
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("result_json="))
    result = json.loads(line.split("=", 1)[1])
    assert len(result["steps"]) == 10
    # The same batch with the same draws before and after training: the projector learned to align.
    assert result["after"] < result["before"]


def test_hf_llava_align_loss_reaches_the_projector_and_the_temperature_only(tmp_path):
    import torch

    from alignkit.integrations.transformers import LlavaSEA

    example = _load_hf_example()
    model, tokenizer, labeler, data = example.build(tmp_path, seed=0)
    sea = LlavaSEA(model, labeler, tokenizer, generator=torch.Generator().manual_seed(0))
    batch = example.collate(tokenizer.pad_token_id)([data[i] for i in range(4)])
    model(**batch)  # the model's own forward; nothing else runs the tower
    out = sea()
    assert out["align_pairs_after_dedup"] > 1 and out["loss_align"].requires_grad
    out["loss_align"].backward()  # the align loss alone
    projector = model.model.multi_modal_projector
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())
    assert sea.aligner.loss.logit_scale.grad is not None and sea.aligner.loss.logit_scale.grad.abs() > 0
    others = [n for n, p in model.named_parameters() if p.grad is not None and not n.startswith("model.multi_modal")]
    assert others == []  # the tower and the LLM are frozen in stage 1
    try:
        sea()  # the captured tensors were used: a second call without a forward is an error, not a stale batch
    except ValueError as err:
        assert "no image forward was captured" in str(err)
    else:
        raise AssertionError("a second sea() call without a forward did not raise")
