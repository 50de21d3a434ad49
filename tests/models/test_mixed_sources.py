"""Text-only rows mixed with image rows from several annotation files, through collate and LLaVAModel."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_model_cfg
from PIL import Image

from alignkit.datasets import IGNORE_INDEX, llava_collate
from alignkit.registry import DATASETS, MODELS


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MODELS.build(tiny_model_cfg())
    m.eval()  # no dropout: per-row and batched losses must agree
    return m


def _turns(q, a):
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def test_mixed_batch_loss_is_the_token_weighted_mean_of_its_rows(tmp_path, model):
    g = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(g.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / folder / "x.png")
    (tmp_path / "a.json").write_text(json.dumps([
        {"id": "a-img", "image": "x.png", "conversations": _turns("<image>\nWhat is this?", "a cat on the grass")},
        {"id": "a-txt", "conversations": _turns("Name a colour.", "red")},
    ]))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "b-txt", "conversations": _turns("Say hello.", "hello there")},
        {"id": "b-img", "image": "x.png", "conversations": _turns("Describe <image>", "a red car near a tree")},
    ]))
    ds = DATASETS.build(dict(
        type="LLaVADataset", tokenizer=model.tokenizer, template="vicuna_v1", data_root=str(tmp_path),
        image_processor=dict(type="OpenCLIPImageProcessor", model_name="alignkit-demo-vit"),
        image_token_length=model.num_visual_tokens, max_length=512,
        sources=[dict(ann_file="a.json", image_folder="a"), dict(ann_file="b.jsonl", image_folder="b")]))
    samples = [ds[i] for i in range(len(ds))]
    assert [s["skipped"] for s in samples] == [{}] * 4
    assert [s["has_image"] for s in samples] == [True, False, False, True]
    assert not torch.equal(samples[0]["image"], samples[3]["image"])  # each file's own folder

    with torch.no_grad():
        batch = llava_collate(samples)
        out = model(**batch, mode="loss")
        assert set(out) >= {"loss_lm", "loss_align"} and torch.isfinite(out["loss_lm"])
        # The batch loss is the mean over all supervised tokens, so it equals the rows' own losses
        # weighted by their supervised-token counts (right padding does not change a causal LM's logits).
        losses, counts = [], []
        for s in samples:
            one = llava_collate([s])
            losses.append(model(**one, mode="loss")["loss_lm"])
            counts.append(int((one["inputs"]["labels"] != IGNORE_INDEX).sum()))
    expected = sum(lo * n for lo, n in zip(losses, counts, strict=True)) / sum(counts)
    # float32 attention over different padded lengths: ~1e-5 relative; a mishandled row shifts it by far more.
    torch.testing.assert_close(out["loss_lm"], expected, rtol=1e-4, atol=1e-4)
