"""The demo's validation loop: alignment metrics on held-out photographs, with and without SEA's aligner.

Both runs go through tools/train.py's main in-process with the same seed; the
one without the aligner keeps ``align_eval.labeler``, so it is measured on the
very same labels and word table.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alignkit.cli.train import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "projects" / "sea" / "configs" / "demo_tiny.py")
KEYS = ("label_top1", "label_top5", "label_mean_rank", "label_cosine", "nearest_word_agreement", "tacs")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo_alignment")
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNKIT_CACHE_DIR", str(base / "cache"))
    mp.setenv("ALIGNKIT_DEMO_DATA", str(base / "data"))  # train and held-out split share the data root
    try:
        out = {}
        for name, options in (("sea", []), ("baseline", ["model.aligner=None", "model.trainable=[adapter]"])):
            work_dir = base / name
            runner = main([DEMO, "--work-dir", str(work_dir), "--cfg-options", "randomness.seed=42", *options])
            files = sorted(work_dir.glob("*/vis_data/scalars.json"))
            rows = [json.loads(line) for line in files[-1].read_text().splitlines()]
            out[name] = dict(val=[r for r in rows if "align/label_mean_rank" in r], runner=runner)
    finally:
        mp.undo()
    return out


def test_validation_runs_every_interval_and_logs_every_metric(runs):
    for name, run in runs.items():
        cfg = run["runner"].cfg
        want = cfg.train_cfg.max_iters // cfg.train_cfg.val_interval
        assert len(run["val"]) == want >= 3, name
        assert (run["runner"].model.aligner is None) == (name == "baseline")
        for row in run["val"]:
            for key in KEYS:
                value = row[f"align/{key}"]
                assert math.isfinite(value), (name, key)
            assert 0 <= row["align/label_top1"] <= row["align/label_top5"] <= 1
            assert 1 <= row["align/label_mean_rank"] <= len(run["runner"].model.align_evaluator.labeler.words)
            assert -1 <= row["align/label_cosine"] <= 1 and -1 <= row["align/tacs"] <= 1
            assert not any("loss" in k for k in row if k.startswith("align/"))


def test_label_retrieval_improves_during_the_sea_demo(runs):
    first, last = runs["sea"]["val"][0], runs["sea"]["val"][-1]
    assert last["align/label_mean_rank"] < first["align/label_mean_rank"]
    assert last["align/label_cosine"] > first["align/label_cosine"]


def test_the_aligner_beats_the_same_demo_without_it_on_label_retrieval(runs):
    sea, base = runs["sea"]["val"][-1], runs["baseline"]["val"][-1]
    # Same seed, same held-out images, same labels: only the align loss differs.
    assert sea["align/label_mean_rank"] < base["align/label_mean_rank"]
    assert sea["align/label_cosine"] > base["align/label_cosine"]
