"""llava_collate: padding, masks, images, carried metadata, and mmengine's forward contract."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from mmengine.model import BaseDataPreprocessor, BaseModel

from alignkit.datasets import IGNORE_INDEX, IMAGE_TOKEN_INDEX, llava_collate
from alignkit.registry import FUNCTIONS
from alignkit.structures import PatchLabels

PAD = 0


def sample(seed: int, length: int, has_image: bool = True, sid: str = "x", size: int = 8, labels=None, **extra):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (length,), generator=g)
    if has_image and length > 1:
        ids[1] = IMAGE_TOKEN_INDEX
    lab = ids.clone() if labels is None else labels
    lab[: min(2, length)] = IGNORE_INDEX
    image = torch.randn(3, size, size, generator=g) if has_image else torch.zeros(3, size, size)
    out = dict(
        input_ids=ids,
        labels=lab,
        image=image,
        has_image=has_image,
        sample_id=sid,
        image_size=(40, 30),
        patch_labels=None,
        truncated=False,
        pad_token_id=PAD,
        skipped={},
    )
    out.update(extra)
    return out


@given(
    st.lists(st.integers(1, 12), min_size=1, max_size=5), st.integers(0, 2**31 - 1), st.sampled_from(["right", "left"])
)
def test_padding_matches_a_reference(lengths, seed, side):
    batch = [sample(seed + i, n, has_image=i % 2 == 0, sid=str(i)) for i, n in enumerate(lengths)]
    out = llava_collate(batch, padding_side=side)
    inputs = out["inputs"]
    t = max(lengths)
    assert inputs["input_ids"].shape == inputs["labels"].shape == inputs["attention_mask"].shape == (len(batch), t)
    for i, (s, n) in enumerate(zip(batch, lengths, strict=True)):
        real = slice(0, n) if side == "right" else slice(t - n, t)
        pad = slice(n, t) if side == "right" else slice(0, t - n)
        assert torch.equal(inputs["input_ids"][i, real], s["input_ids"])
        assert torch.equal(inputs["labels"][i, real], s["labels"])
        assert (inputs["input_ids"][i, pad] == PAD).all() and (inputs["labels"][i, pad] == IGNORE_INDEX).all()
        assert inputs["attention_mask"][i, real].all() and not inputs["attention_mask"][i, pad].any()
        assert torch.equal(inputs["images"][i], s["image"])
    assert inputs["has_image"].tolist() == [i % 2 == 0 for i in range(len(batch))]
    assert out["data_samples"]["sample_ids"] == [str(i) for i in range(len(batch))]


def test_metadata_skips_and_patch_labels():
    g = torch.Generator().manual_seed(1)
    pl = [
        PatchLabels(torch.randint(0, 9, (1, 4, 2), generator=g), torch.rand(1, 4, 2, generator=g), (2, 2))
        for _ in range(3)
    ]
    batch = [
        sample(0, 5, patch_labels=pl[0], skipped={"too_long": 1}),
        sample(1, 3, patch_labels=pl[1], skipped={}, truncated=True),
        sample(2, 4, has_image=False, patch_labels=pl[2], skipped={"too_long": 1, "missing_image": 1}),
    ]
    out = llava_collate(batch, pad_token_id=7)
    assert (out["inputs"]["input_ids"][1, 3:] == 7).all()  # an explicit pad id wins
    ds = out["data_samples"]
    assert ds["skipped"] == {"too_long": 2, "missing_image": 1}
    assert ds["num_truncated"] == 1
    assert torch.equal(ds["patch_labels"].words, torch.cat([p.words for p in pl]))
    assert ds["image_sizes"] == [(40, 30)] * 3


@pytest.mark.parametrize(
    "batch, kwargs, match",
    [
        ([], {}, "empty batch"),
        ([sample(0, 3)], dict(padding_side="middle"), "padding_side"),
        ([sample(0, 3), sample(1, 3, size=4)], {}, "different shapes"),
        ([sample(0, 3), sample(1, 3, pad_token_id=5)], {}, "pad_token_id"),
        (
            [
                sample(
                    0, 3, patch_labels=PatchLabels(torch.zeros(1, 1, 1, dtype=torch.long), torch.zeros(1, 1, 1), (1, 1))
                ),
                sample(1, 3),
            ],
            {},
            "patch_labels",
        ),
        ([sample(0, 3, labels=torch.zeros(4, dtype=torch.long))], {}, "labels"),
    ],
)
def test_bad_batches_raise(batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        llava_collate(batch, **kwargs)


class ShapeCheckingModel(BaseModel):
    """A minimal mmengine model: forward(inputs, data_samples, mode) as the LLaVA model will have it."""

    def forward(self, inputs, data_samples=None, mode="tensor"):
        ids = inputs["input_ids"]
        assert inputs["labels"].shape == ids.shape and inputs["images"].shape[0] == ids.shape[0]
        supervised = (inputs["labels"] != IGNORE_INDEX).sum()
        return dict(loss_lm=supervised.float(), num_samples=torch.tensor(len(data_samples["sample_ids"])))


def test_mmengine_forward_takes_the_batch():
    batch = llava_collate([sample(0, 5), sample(1, 3, has_image=False)])
    data = BaseDataPreprocessor()(batch, training=True)
    out = ShapeCheckingModel()(**data, mode="loss")
    assert int(out["loss_lm"]) == (5 - 2) + (3 - 2) and int(out["num_samples"]) == 2


def test_registered_in_functions():
    assert FUNCTIONS.get("llava_collate") is llava_collate
