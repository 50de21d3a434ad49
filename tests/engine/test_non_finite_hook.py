"""``NonFinitePatchesHook`` in a real Runner: non-finite inputs are counted and warned about in the training log.

The toy model leaves out rows whose input holds NaN and reports how many under
``align_patches_nonfinite``, the key ``SEAAligner`` uses for patches with
non-finite dense embeddings (``tests/models/test_sea_aligner.py`` checks the aligner's side).
"""
from pathlib import Path

import pytest
from engine_toy import write_config

from alignkit.cli.train import main
from alignkit.engine.hooks import NonFinitePatchesHook

NAN_ROWS = (0, 5)


def _log_text(work_dir: Path) -> str:
    (log,) = sorted(work_dir.glob("*/*.log"))
    return log.read_text()


@pytest.mark.parametrize("interval", [1, 3])
def test_nan_rows_are_counted_and_warned_once_per_interval(tmp_path, interval):
    config = write_config(tmp_path / "toy.py", max_iters=6, ckpt_interval=6)
    # 6 iterations x 4 rows = the 24 rows once each (InfiniteSampler: one shuffled pass), so every NaN row is seen once.
    nan_cfg = tmp_path / "toy_nan.py"
    nan_cfg.write_text(
        "_base_ = ['./toy.py']\n"
        f"train_dataloader = dict(dataset=dict(nan_rows={NAN_ROWS!r}))\n"
        f"custom_hooks = [dict(type='NonFinitePatchesHook', interval={interval})]\nlog_level = 'INFO'\n"
    )
    runner = main([str(nan_cfg), "--work-dir", str(tmp_path / "work")])
    (hook,) = [h for h in runner.hooks if isinstance(h, NonFinitePatchesHook)]
    assert hook.total == len(NAN_ROWS)
    assert runner.message_hub.get_scalar("train/align_patches_nonfinite_total").current() == len(NAN_ROWS)
    text = _log_text(tmp_path / "work")
    warnings = [line for line in text.splitlines() if "NonFinitePatchesHook: iter" in line]
    assert 1 <= len(warnings) <= min(len(NAN_ROWS), 6 // interval)  # only intervals that saw one, at most one each
    assert "patches had NaN/inf dense embeddings" in warnings[0]
    assert f"training done, {len(NAN_ROWS)} patches had NaN/inf" in text


def test_no_warning_when_everything_is_finite(tmp_path):
    config = write_config(tmp_path / "toy.py", max_iters=4, ckpt_interval=4)
    clean = tmp_path / "toy_clean.py"
    clean.write_text("_base_ = ['./toy.py']\ncustom_hooks = [dict(type='NonFinitePatchesHook')]\nlog_level = 'INFO'\n")
    runner = main([str(clean), "--work-dir", str(tmp_path / "work")])
    (hook,) = [h for h in runner.hooks if isinstance(h, NonFinitePatchesHook)]
    assert hook.total == 0 and config.exists()
    assert "NonFinitePatchesHook: " not in _log_text(tmp_path / "work")  # (the config dump names the hook)
