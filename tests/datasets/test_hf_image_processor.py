"""HFImageProcessor: transformers' own CLIP/SigLIP processor, with LLaVA-1.5's pad-to-square."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alignkit.datasets import HFImageProcessor
from alignkit.datasets.hf_image_processor import pil_processor_class
from alignkit.registry import TRANSFORMS
from alignkit.testing.hf_tiny import save_hf_tower, tiny_clip


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def llava_expand2square(image: Image.Image, background) -> Image.Image:
    """LLaVA-1.5's expand2square, written out as a reference."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new(image.mode, (side, side), background)
    out.paste(image, ((side - w) // 2, 0) if w < h else (0, (side - h) // 2))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_hf_tower(tiny_clip(image_size=32), tmp_path_factory.mktemp("clip") / "clip")


def test_the_processor_of_a_folder_is_transformers_own(folder):
    proc = TRANSFORMS.build(dict(type="HFImageProcessor", model_name=folder))
    raw = pil_processor_class("clip").from_pretrained(folder)
    image = photo(45, 30)
    assert proc.image_size == (32, 32)
    assert torch.equal(proc(image), raw.preprocess(image, return_tensors="pt")["pixel_values"][0])
    assert proc.blank().shape == (3, 32, 32) and not proc.blank().any()
    fp = proc.fingerprint()
    assert fp["backend"] == "transformers" and fp["resize_mode"] == "shortest" and fp["interpolation"] == "bicubic"


def test_pad_to_square_is_llavas(folder):
    proc = HFImageProcessor(model_name=folder, pad_to_square=True)
    raw = pil_processor_class("clip").from_pretrained(folder)
    image = photo(40, 20, seed=1)
    fill = tuple(int(m * 255) for m in raw.image_mean)  # LLaVA: tuple(int(x*255) for x in image_mean)
    expect = raw.preprocess(llava_expand2square(image, fill), return_tensors="pt")["pixel_values"][0]
    assert torch.equal(proc(image), expect)
    # the padding rows (top quarter of the square) are the mean colour truncated to an int: after normalising
    # |m - int(255 m) / 255| / s < (1/255) / min(std) = 0.0150
    assert proc(image)[:, :6].abs().max() < (1 / 255) / min(raw.image_std)
    assert proc.fingerprint()["pad_to_square"] is True


def test_bad_processors_are_named(tmp_path):
    with pytest.raises(ValueError, match="exactly one of model_name"):
        HFImageProcessor()
    clip = pil_processor_class("clip")
    with pytest.raises(ValueError, match="its output size depends on the image"):
        HFImageProcessor(processor=clip(size={"shortest_edge": 32}, do_center_crop=False))
    with pytest.raises(ValueError, match="no preprocessor_config.json could be read"):
        HFImageProcessor(model_name=str(tmp_path))


@pytest.mark.parametrize("family, own, by_hand", [
    ("clip", dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
     dict(size={"shortest_edge": 96}, crop_size={"height": 96, "width": 96})),
    ("siglip", dict(size={"height": 32, "width": 32}), dict(size={"height": 96, "width": 96})),
])
def test_image_size_is_the_same_processor_at_another_size(family, own, by_hand):
    # LLaVA's S² tower sets its processor's size (and CLIP's crop) to the largest scale: 96 here.
    base = pil_processor_class(family)(**own)
    proc = HFImageProcessor(processor=base, image_size=96, pad_to_square=True)
    want = pil_processor_class(family)(**by_hand)
    image = photo(70, 50, seed=2)
    assert proc.image_size == (96, 96) and proc.blank().shape == (3, 96, 96)
    assert torch.equal(proc(image), HFImageProcessor(processor=want, pad_to_square=True)(image))
    assert proc.fingerprint() == HFImageProcessor(processor=want, pad_to_square=True).fingerprint()
    assert HFImageProcessor(processor=base).image_size == (32, 32)  # the given processor is left as it was
    with pytest.raises(ValueError, match="image_size"):
        HFImageProcessor(processor=base, image_size=0)
