"""Training on the demo with ``label_cache=DIR``: a matching cache trains, a mismatched one stops before step 1.

The cache is written by the real ``tools/extract_labels.py`` from the demo's own
labeler config (tiny random-weight CLIP ViT, built under the seed the Runner
builds the model under, so both have the same weights and fingerprint).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import DEMO

from alignkit.cli.extract_labels import main as extract
from alignkit.cli.train import main as train
from alignkit.labelers.cache import LabelCacheError
from alignkit.testing.demo import _caption_words, write_demo_data

SEED = 42  # the demo's randomness.seed: the Runner seeds before it builds the model (and its labeler)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo_label_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNKIT_DEMO_DATA", str(base / "data"))
    mp.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    ann = write_demo_data(base / "data")
    words = base / "words.txt"
    words.write_text("\n".join(_caption_words()) + "\n", encoding="utf-8")
    # The demo's labeler (sea_clip_l336.py) with the encoder's model filled in, as LLaVAModel does.
    labeler = dict(type="CLIPTopNLabeler", model_name="alignkit-demo-vit", pretrained=None, word_list=str(words),
                   top_n=10, min_score=0.0, negate=True)
    label_data = dict(ann_file=ann, image_folder=str(base / "data"), batch_size=8, num_workers=0, shard_size=16)
    config = base / "demo_labels.py"
    config.write_text(f"custom_imports = dict(imports=['alignkit.testing.demo'], allow_failed_imports=False)\n"
                      f"labeler = {labeler!r}\nlabel_data = {label_data!r}\n", encoding="utf-8")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        assert extract([str(config), "--out", str(base / "cache"), "--device", "cpu", "--no-progress"]) == 0
    yield dict(base=base, words=words, cache=base / "cache")
    mp.undo()


def _train(demo_cache, work_dir, *options):
    return train([DEMO, "--work-dir", str(work_dir), "--cfg-options", "train_cfg.max_iters=1",
                  "train_dataloader.batch_size=2", "default_hooks.checkpoint.interval=1",
                  f"model.aligner.labeler.word_list={demo_cache['words']}",
                  f"model.align_eval.labeler.word_list={demo_cache['words']}",  # one labeler, one small bank
                  f"train_dataloader.dataset.label_cache={demo_cache['cache']}", *options])


def _iters_run(work_dir: Path) -> list[Path]:
    return sorted(work_dir.glob("iter_*.pth"))


def test_a_matching_cache_trains(demo_cache, tmp_path):
    runner = _train(demo_cache, tmp_path)
    assert runner.iter == 1 and _iters_run(tmp_path) == [tmp_path / "iter_1.pth"]


@pytest.mark.parametrize("loader", ["train_dataloader", "val_dataloader"])
def test_a_cache_of_another_word_list_refuses_before_the_first_step(demo_cache, tmp_path, loader):
    # Same size, one word replaced: today this trains on wrong target words without a warning.
    # (Every other field -- V, top-n, grid, transform, backend -- is covered in tests/labelers.)
    # Validation labels feed the alignment metrics: they are checked against align_eval's labeler.
    words = demo_cache["words"].read_text(encoding="utf-8").split()
    other = tmp_path / "other_words.txt"
    other.write_text("\n".join(words[:-1] + ["zebra"]) + "\n", encoding="utf-8")
    options = [f"model.align_eval.labeler.word_list={other}"]
    if loader == "train_dataloader":
        options.append(f"model.aligner.labeler.word_list={other}")
    else:
        options.append(f"val_dataloader.dataset.label_cache={demo_cache['cache']}")
    with pytest.raises(LabelCacheError) as err:
        _train(demo_cache, tmp_path / "work", *options)
    msg = str(err.value)
    assert f"label cache {demo_cache['cache']} does not match the model and {loader}.dataset" in msg
    assert re.search(r"labeler\.word_list_sha256: cache has '[0-9a-f]{64}', model's labeler has '[0-9a-f]{64}'", msg)
    assert _iters_run(tmp_path / "work") == []  # not one step
