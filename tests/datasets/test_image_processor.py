"""OpenCLIPImageProcessor: CLIP preprocessing from an open_clip name (no weights), and pad-to-square."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alignkit.datasets import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, OpenCLIPImageProcessor, expand_to_square
from alignkit.registry import TRANSFORMS

NAMES = ["astronaut", "chelsea", "coffee"]


def photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)())


def reference_clip(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """Resize the shortest side to ``size`` (PIL bicubic, long side truncated), centre-crop
    (offset rounded), scale to [0, 1], normalise — written out step by step."""
    w, h = image.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    image = image.resize(new, Image.BICUBIC)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_settings_from_open_clip_names():
    clip = TRANSFORMS.build(dict(type="OpenCLIPImageProcessor", model_name="ViT-L-14-336", pretrained="openai"))
    assert clip.image_size == (336, 336)
    assert clip.mean == pytest.approx(OPENAI_CLIP_MEAN) and clip.std == pytest.approx(OPENAI_CLIP_STD)
    assert clip.fill == (122, 116, 104)  # int(m * 255) of OpenAI's mean, LLaVA's pad colour
    assert clip.resize_mode == "shortest"
    siglip = OpenCLIPImageProcessor("ViT-SO400M-14-SigLIP-384", pretrained="webli")
    assert siglip.image_size == (384, 384)
    assert siglip.mean == siglip.std == (0.5, 0.5, 0.5) and siglip.fill == (127, 127, 127)
    assert siglip.resize_mode == "squash"
    # Explicit values win over the names.
    assert OpenCLIPImageProcessor("ViT-L-14-336", image_size=32).image_size == (32, 32)


@pytest.mark.parametrize("name", NAMES)
def test_equals_a_written_out_clip_pipeline(name):
    proc = OpenCLIPImageProcessor(model_name="ViT-L-14-336", pretrained="openai")
    image = photo(name)
    torch.testing.assert_close(
        proc(image), reference_clip(image, 336, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", NAMES)
def test_close_to_transformers_clip_image_processor(name):
    """LLaVA-1.5 used transformers' CLIPImageProcessor; only resampling rounding differs."""
    from transformers import CLIPImageProcessor

    hf = CLIPImageProcessor(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    image = photo(name)
    ours = OpenCLIPImageProcessor("ViT-L-14-336", pretrained="openai")(image)
    theirs = torch.as_tensor(np.asarray(hf(image, return_tensors="pt")["pixel_values"][0]))
    diff = (ours - theirs).abs()
    assert diff.mean() < 1e-3 and diff.max() < 0.05  # 0.05 ≈ 3 of 255 grey levels after normalising


def test_expand_to_square_centres_on_the_fill_colour():
    image = photo("chelsea")  # 451 × 300 (W × H)
    fill = (122, 116, 104)
    square = np.asarray(expand_to_square(image, fill))
    assert square.shape == (451, 451, 3)
    top = (451 - 300) // 2  # 75
    assert (square[:top] == fill).all() and (square[top + 300 :] == fill).all()
    assert (square[top : top + 300] == np.asarray(image)).all()
    tall = expand_to_square(image.transpose(Image.Transpose.ROTATE_90), fill)  # 300 × 451
    assert (np.asarray(tall)[:, :top] == fill).all()
    assert expand_to_square(photo("astronaut"), fill).size == (512, 512)  # square: unchanged


def test_pad_to_square_pads_with_the_mean():
    proc = OpenCLIPImageProcessor("ViT-L-14-336", pretrained="openai", pad_to_square=True)
    out = proc(photo("chelsea"))  # the padding covers 75 / 451 of the height: rows 0..~55 after resizing
    expected = (torch.tensor(proc.fill) / 255 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD)
    torch.testing.assert_close(out[:, :40, :], expected.view(3, 1, 1).expand(3, 40, 336), atol=1e-5, rtol=0)
    # ~0 after normalising: int() loses under one grey level, i.e. < 1 / (255 * std).
    assert expected.abs().max() < 1 / (255 * min(OPENAI_CLIP_STD))
    # Without padding the same image is centre-cropped: no constant band at the top.
    plain = OpenCLIPImageProcessor("ViT-L-14-336", pretrained="openai")(photo("chelsea"))
    assert (plain[:, :40, :] - expected.view(3, 1, 1)).abs().max() > 0.5


def test_blank_and_fingerprint():
    proc = OpenCLIPImageProcessor(image_size=(48, 64))
    assert proc.blank().shape == (3, 48, 64) and not proc.blank().any()
    fp = proc.fingerprint()
    assert fp["image_size"] == [48, 64] and fp["pad_to_square"] is False


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "model_name or an image_size"),
        (dict(model_name="ViT-Nope"), "not an open_clip model"),
        (dict(model_name="ViT-L-14-336", pretrained="laion9b"), "openai"),
        (dict(pretrained="openai"), "needs a model_name"),
        (dict(image_size=0), "image_size"),
        (dict(image_size=32, mean=(0.5, 0.5)), "mean"),
        (dict(image_size=32, resize_mode="crop"), "resize_mode"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OpenCLIPImageProcessor(**kwargs)


def test_rejects_non_images():
    with pytest.raises(ValueError, match="PIL"):
        OpenCLIPImageProcessor(image_size=32)(np.zeros((32, 32, 3), np.uint8))
