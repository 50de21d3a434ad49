"""``tools/visualize_alignment.py`` (the paper's Figure 1) on the embedded demo.

The session's trained demo checkpoint (``demo_checkpoint`` in tests/conftest.py)
carries its model description; the tool draws two scikit-image photographs from it.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import DEMO
from PIL import Image

from alignkit.cli.visualize_alignment import HIT, MISS, main, window_centres, window_for
from alignkit.engine.model_description import META_KEY

GRID = (8, 8)  # the demo ViT: 64 px images, 8 px patches


@pytest.fixture(scope="module")
def demo(demo_checkpoint):
    """The session's trained demo checkpoint (tests/conftest.py) and two of its photographs."""
    return demo_checkpoint


def _cells_cover_every_window(cells, grid, k):
    windows = {(c["row"] // k, c["col"] // k) for c in cells}
    return windows == {(i, j) for i in range(math.ceil(grid[0] / k)) for j in range(math.ceil(grid[1] / k))}


@pytest.mark.parametrize("max_labels", [12, 3])
def test_figure1_pngs_and_cells(demo, tmp_path, max_labels):
    out = tmp_path / "fig1"
    summary = main([demo["ckpt"], *demo["images"], "--out", str(out), "--max-labels", str(max_labels)])
    k = max(1, math.ceil(max(GRID) / max_labels))  # 12 -> k = 1 (64 labels), 3 -> k = 3 (3 x 3 partial windows)
    expected = math.ceil(GRID[0] / k) * math.ceil(GRID[1] / k)
    assert summary["window"] == k and summary["num_skipped"] == 0
    assert summary["source"]["checkpoint"] == demo["ckpt"]
    # built from the description stored in the checkpoint, not from the config mmengine dumped into the work dir
    assert summary["source"]["config"] == f"checkpoint {demo['ckpt']!r}"
    for image in demo["images"]:
        stem = Path(image).stem
        png = out / f"{stem}.png"
        assert png.stat().st_size > 0
        with Image.open(png) as im:
            im.load()
            assert im.size[0] > 500 and im.size[1] > 500
        record = json.loads((out / f"{stem}.json").read_text())
        cells = record["cells"]
        assert record["num_cells"] == len(cells) == expected
        assert _cells_cover_every_window(cells, GRID, k)
        for c in cells:
            assert c["patch"] == c["row"] * GRID[1] + c["col"]
            assert c["hit"] == (c["word"] in c["labels"])  # green iff the nearest word is a top-n label
            assert c["color"] == (HIT if c["hit"] else MISS)
        m = record["metrics"]
        assert 0 <= m["nearest_word_agreement"] <= 1 and m["labelled_patches"] <= GRID[0] * GRID[1]


def test_window_centres_one_per_window_inside_it():
    for h, w, k in [(24, 24, 2), (8, 8, 3), (5, 7, 4), (3, 3, 1)]:
        c = window_centres((h, w), k)
        rows, cols = c // w, c % w
        assert len(c) == math.ceil(h / k) * math.ceil(w / k)
        assert len(set(zip((rows // k).tolist(), (cols // k).tolist()))) == len(c)
    assert window_for((24, 24), 12) == 2 and window_for((8, 8), 12) == 1 and window_for((27, 27), 12) == 3


def test_config_alone_says_random_adapter(demo, tmp_path):
    summary = main([DEMO, demo["images"][0], "--out", str(tmp_path / "o"), "--cfg-options", demo["word_option"]])
    assert summary["source"]["checkpoint"] is None
    assert "random adapter" in summary["source"]["description"]


def test_config_plus_checkpoint_of_another_config_names_the_key(demo, tmp_path):
    with pytest.raises(ValueError, match=r"iter_2\.pth.*adapter\.layers\.4"):
        main([DEMO, demo["ckpt"], demo["images"][0], "--out", str(tmp_path / "o"),
              "--cfg-options", "model.adapter.depth=3", demo["word_option"]])


def test_unreadable_images(demo, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        main([demo["ckpt"], str(bad), "--out", str(tmp_path / "one")])
    summary = main([demo["ckpt"], str(bad), demo["images"][0], "--out", str(tmp_path / "two")])
    assert summary["num_skipped"] == 1 and summary["skipped"][0]["path"] == str(bad)
    assert [Path(r["image"]).name for r in summary["images"]] == ["astronaut.png"]


def test_checkpoint_without_model_description(demo, tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    ckpt = torch.load(demo["ckpt"], map_location="cpu", weights_only=False)
    ckpt["meta"].pop(META_KEY)
    torch.save(ckpt, lone / "iter_4.pth")
    with pytest.raises(ValueError, match="carries no alignkit model description"):
        main([str(lone / "iter_4.pth"), demo["images"][0], "--out", str(tmp_path / "o")])
    # the description stored in the checkpoint is enough: no dumped config next to it is needed
    shutil.copy(demo["ckpt"], lone / "iter_4.pth")
    summary = main([str(lone / "iter_4.pth"), demo["images"][0], "--out", str(tmp_path / "o2")])
    assert summary["source"]["checkpoint"] == str(lone / "iter_4.pth")


def test_out_dir_with_files_is_refused_unless_force(demo, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="--force"):
        main([demo["ckpt"], demo["images"][0], "--out", str(out)])
    main([demo["ckpt"], demo["images"][0], "--out", str(out), "--force"])
    assert (out / "astronaut.png").is_file() and (out / "keep.txt").is_file()


def test_a_model_without_aligner_is_labelled_with_labeler(demo, tmp_path):
    words = demo["words"].read_text().split()
    options = ["model.aligner=None", "model.trainable=[adapter]", "model.align_eval=None"]
    with pytest.raises(ValueError, match="--labeler"):
        main([DEMO, demo["images"][0], "--out", str(tmp_path / "none"), "--cfg-options", *options])
    labeler = json.dumps(dict(type="CLIPTopNLabeler", word_list=str(demo["words"]), top_n=3))
    summary = main([DEMO, demo["images"][0], "--out", str(tmp_path / "o"), "--labeler", labeler,
                    "--cfg-options", *options])
    record = json.loads((tmp_path / "o" / "astronaut.json").read_text())
    assert summary["num_skipped"] == 0 and record["cells"]
    for c in record["cells"]:
        assert 1 <= len(c["labels"]) <= 3 and set(c["labels"]) <= set(words)


def test_encoder_tower_cfg_names_the_tower_of_each_encoder_kind():
    from alignkit.cli.visualize_alignment import encoder_tower_cfg
    from alignkit.registry import MODELS

    clip = dict(type="OpenCLIPVisionEncoder", model_name="alignkit-demo-vit", pretrained=None)
    built = MODELS.build(dict(clip, init_empty=True))
    assert encoder_tower_cfg(built) == dict(model_name="alignkit-demo-vit", pretrained=None,
                                            dense_mode=built.dense_mode)
    s2 = MODELS.build(dict(type="MultiScaleVisionEncoder", encoder=dict(clip, init_empty=True), scales=(64, 128)))
    assert encoder_tower_cfg(s2) == encoder_tower_cfg(built)  # the wrapped tower's
