"""``benchmarks/gpu_suite.py --dry-run``: all four measurements run at tiny shapes on the CPU and are reported.

The dry run exists so the GPU suite cannot rot where CI has no GPU; its
numbers mean nothing and are never compared with a time.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_suite_dry_run_reports_every_measurement(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               ALIGNKIT_CACHE_DIR=str(tmp_path / "cache"),
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR",
                                                   str(Path.home() / ".cache" / "alignkit" / "torch_extensions")))
    out = tmp_path / "suite"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu_suite.json").read_text())
    assert results["dry_run"] and results["device"] == "cpu"

    share = results["aligner_share"]
    assert share["sea_ms"] > 0 and share["baseline_ms"] > 0 and share["batch"] == 4
    assert share["ratio"] == pytest.approx(share["sea_ms"] / share["baseline_ms"])
    labeler = results["labeler"]
    assert labeler["words"] == 500
    assert labeler["projected_min_558k"] == pytest.approx(558_128 / labeler["images_per_s"] / 60)
    hf = results["vs_transformers"]
    assert hf["ratio"] == pytest.approx(hf["alignkit_ms"] / hf["transformers_ms"]) and hf["batch"] == share["batch"]
    zero3 = results["zero3_stage2"]
    if importlib.util.find_spec("deepspeed") is None:
        assert "skipped" in zero3
    else:
        # The demo model's parameter count: the step ran on the whole model, partitioned (world size 1).
        assert zero3["step_s"] > 0 and zero3["params"] > 0 and "oom" not in zero3

    table = (out / "gpu_suite.md").read_text()
    assert "DRY RUN" in table
    for row in ("aligner's share", "labeler end to end", "transformers LLaVA", "ZeRO-3 stage-2"):
        assert row in table
