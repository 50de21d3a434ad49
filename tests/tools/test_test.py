"""``tools/test.py CONFIG CHECKPOINT``: the checkpoint's alignment metrics, as the training run validated it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DEMO

from alignkit.cli.extract_labels import main as extract
from alignkit.cli.test import main
from alignkit.labelers.cache import LabelCacheError



def test_metrics_equal_the_training_runs_validation(demo_checkpoint, tmp_path, capsys):
    work = Path(demo_checkpoint["ckpt"]).parent
    (scalars,) = work.glob("*/vis_data/scalars.json")
    logged = [json.loads(line) for line in scalars.read_text().splitlines()]
    (val,) = [row for row in logged if "align/label_top1" in row]  # validated once, at iteration 2
    out = tmp_path / "m.json"
    got = main([str(work / "demo_tiny.py"), demo_checkpoint["ckpt"], "--work-dir", str(tmp_path / "w"),
                "--out", str(out), "--no-generate"])
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
    with pytest.raises(ValueError, match="iter_2.pth.*does not fit"):  # the answers-only path loads as strictly
        main([str(work / "demo_tiny.py"), demo_checkpoint["ckpt"], "--work-dir", str(tmp_path / "w"),
              "--no-metrics", "--cfg-options", "model.llm.config.num_hidden_layers=1"])


def test_a_label_cache_of_another_labeler_is_refused_before_scoring(demo_checkpoint, tmp_path):
    """The split's labels feed the metrics: a cache made with another top-n (and weights) is named and refused,
    even when the config does not list LabelCacheCheckHook (the demo's own custom_hooks do not)."""
    words = demo_checkpoint["base"] / "words.txt"
    labeler = dict(type="CLIPTopNLabeler", model_name="alignkit-demo-vit", pretrained=None, word_list=str(words),
                   top_n=3)
    label_data = dict(ann_file=str(demo_checkpoint["data"] / "demo_pretrain.json"),
                      image_folder=str(demo_checkpoint["data"]), batch_size=8, num_workers=0, shard_size=32)
    config = tmp_path / "labels.py"
    config.write_text(f"custom_imports = dict(imports=['alignkit.testing.demo'], allow_failed_imports=False)\n"
                      f"labeler = {labeler!r}\nlabel_data = {label_data!r}\n", encoding="utf-8")
    assert extract([str(config), "--out", str(tmp_path / "cache"), "--device", "cpu", "--no-progress"]) == 0
    with pytest.raises(LabelCacheError) as err:
        main([DEMO, demo_checkpoint["ckpt"], "--work-dir", str(tmp_path / "w"), "--cfg-options",
              f"model.aligner.labeler.word_list={words}", f"model.align_eval.labeler.word_list={words}",
              f"val_dataloader.dataset.label_cache={tmp_path / 'cache'}", "--no-generate"])
    msg = str(err.value)
    assert "does not match the model and test_dataloader.dataset" in msg
    assert "labeler.top_n: cache has 3, model's labeler has 10" in msg
