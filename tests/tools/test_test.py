"""``tools/test.py CONFIG CHECKPOINT``: the checkpoint's alignment metrics, as the training run validated it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.cli.test import main


def test_metrics_equal_the_training_runs_validation(demo_checkpoint, tmp_path, capsys):
    work = Path(demo_checkpoint["ckpt"]).parent
    (scalars,) = work.glob("*/vis_data/scalars.json")
    logged = [json.loads(line) for line in scalars.read_text().splitlines()]
    (val,) = [row for row in logged if "align/label_top1" in row]  # validated once, at iteration 2
    out = tmp_path / "m.json"
    got = main([str(work / "demo_tiny.py"), demo_checkpoint["ckpt"], "--work-dir", str(tmp_path / "w"),
                "--out", str(out)])
    keys = sorted(k for k in val if k.startswith("align/"))
    assert keys and sorted(got) == keys
    for key in keys:  # same weights, same held-out images, same labeler: the same numbers
        assert got[key] == pytest.approx(val[key], rel=1e-6, abs=1e-9), key
    assert json.loads(out.read_text()) == got
    printed = capsys.readouterr().out
    assert f"align/label_top1: {got['align/label_top1']:.6g}" in printed


def test_a_checkpoint_of_another_model_is_refused(demo_checkpoint, tmp_path):
    work = Path(demo_checkpoint["ckpt"]).parent
    with pytest.raises(ValueError, match="iter_2.pth.*does not fit"):
        main([str(work / "demo_tiny.py"), demo_checkpoint["ckpt"], "--work-dir", str(tmp_path / "w"),
              "--cfg-options", "model.llm.config.num_hidden_layers=1"])
