"""MultiScaleVisionEncoder (S²) against a hand-written reference, its contract, and a training step with it.

The reference below loops over scales and crops one by one with plain torch
ops (bicubic resize as s2wrapper does it, slicing, a k x k mean), calling the
wrapped encoder once per crop; the wrapper batches every crop of every scale
through one forward and pools with reshapes, so the two share no code.
Tiny towers with random weights: the demo's open_clip CLIP ViT (64 px, 8x8
grid, D=64, C=32) and a transformers CLIPModel (32 px, 4x4 grid) saved locally.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_batch, tiny_model_cfg
from mmengine.optim import OptimWrapper
from PIL import Image

from alignkit.export.hf import build_llava
from alignkit.models import MultiScaleVisionEncoder
from alignkit.registry import MODELS
from alignkit.testing.hf_tiny import save_hf_tower, tiny_clip

DEMO_ENCODER = dict(type="OpenCLIPVisionEncoder", model_name="alignkit-demo-vit", pretrained=None)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return save_hf_tower(tiny_clip(seed=0), tmp_path_factory.mktemp("s2_hf") / "clip")


@pytest.fixture(scope="module")
def encoders(hf_folder):
    """backend -> (S² encoder over scales 1x, 2x, 3x of the tower's size, base size)."""
    torch.manual_seed(0)
    out = {}
    for name, inner, base in (("open_clip", DEMO_ENCODER, 64),
                              ("transformers", dict(type="HFVisionEncoder", model_name=hf_folder), 32)):
        enc = MODELS.build(dict(type="MultiScaleVisionEncoder", encoder=inner, scales=(base, 2 * base, 3 * base)))
        out[name] = (enc, base)
    return out


def s2_reference(encoder, images: torch.Tensor, scales, base: int):
    """S² by hand: each scale resized (bicubic), each base x base crop through the tower alone, crops laid
    out on one canvas, every k x k block of the canvas averaged; scales side by side on channels."""
    h, w = encoder.grid
    outs = []
    for s in scales:
        k = s // base
        x = images if s == images.shape[-1] else F.interpolate(images, size=(s, s), mode="bicubic",
                                                               align_corners=False)
        canvas = torch.zeros(images.shape[0], k * h, k * w, encoder.vision_dim)
        for i in range(k):
            for j in range(k):
                crop = x[:, :, i * base:(i + 1) * base, j * base:(j + 1) * base]
                feats = encoder(crop).features  # (B, P, D), patch p at row p // W
                canvas[:, i * h:(i + 1) * h, j * w:(j + 1) * w] = feats.reshape(-1, h, w, encoder.vision_dim)
        pooled = torch.zeros(images.shape[0], h, w, encoder.vision_dim)
        for r in range(h):
            for c in range(w):
                pooled[:, r, c] = canvas[:, r * k:(r + 1) * k, c * k:(c + 1) * k].mean(dim=(1, 2))
        outs.append(pooled.reshape(images.shape[0], h * w, -1))
    small = F.interpolate(images, size=(base, base), mode="bicubic", align_corners=False)
    return torch.cat(outs, dim=-1), encoder(small).dense


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_s2_equals_the_crop_by_crop_reference(encoders, backend):
    enc, base = encoders[backend]
    images = torch.randn(2, 3, 3 * base, 3 * base, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features, dense = enc(images)
        want_features, want_dense = s2_reference(enc.encoder, images, enc.scales, base)
    torch.testing.assert_close(features, want_features, atol=1e-5, rtol=1e-5)
    # dense: the base scale's (the image resized to the tower's size, seen whole), not the crops'
    torch.testing.assert_close(dense, want_dense, atol=1e-5, rtol=1e-5)


def test_contract(encoders):
    enc, base = encoders["open_clip"]
    inner = enc.encoder
    assert enc.vision_dim == 3 * inner.vision_dim == 192  # LLaVA's mm_hidden_size: n_scales * D
    assert (enc.grid, enc.num_patches, enc.embed_dim) == (inner.grid, inner.num_patches, inner.embed_dim)
    assert (enc.dense_mode, enc.feature_layer) == (inner.dense_mode, inner.feature_layer)
    assert enc.tower is inner.tower and enc.loaded is inner.loaded
    assert enc.image_size == (3 * base, 3 * base) and enc.splits == (1, 2, 3)
    features, dense = enc(torch.zeros(2, 3, 3 * base, 3 * base))
    assert features.shape == (2, 64, 192) and dense.shape == (2, 64, 32)
    # The transform is the tower's preprocessing at the largest scale.
    image = Image.new("RGB", (300, 200), (120, 30, 200))
    assert enc.transform(image).shape == (3, 3 * base, 3 * base)
    with pytest.raises(ValueError, match=r"images are 64x64 pixels but the encoder expects 192x192"):
        enc(torch.zeros(2, 3, 64, 64))


def test_transformers_transform_is_the_processor_at_the_largest_scale(encoders, hf_folder):
    enc, base = encoders["transformers"]
    from alignkit.datasets.hf_image_processor import HFImageProcessor

    image = Image.new("RGB", (90, 130), (10, 200, 40))
    mine = enc.transform
    assert mine.image_size == (3 * base, 3 * base)
    # The same processor configured by hand, as LLaVA's CLIPVisionTowerS2 sets it (shortest edge + crop).
    proc = HFImageProcessor(model_name=hf_folder).processor
    by_hand = type(proc)(**{**proc.to_dict(), "size": {"shortest_edge": 3 * base},
                            "crop_size": {"height": 3 * base, "width": 3 * base}})
    want = by_hand.preprocess(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(mine(image), want, atol=0, rtol=0)
    assert HFImageProcessor(model_name=hf_folder, image_size=3 * base).fingerprint() == mine.fingerprint()


def test_one_scale_is_the_plain_encoder():
    torch.manual_seed(0)
    one = MODELS.build(dict(type="MultiScaleVisionEncoder", encoder=DEMO_ENCODER, scales=(64,)))
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    got, want = one(images), one.encoder(images)
    assert torch.equal(got.features, want.features) and torch.equal(got.dense, want.dense)
    assert one.vision_dim == one.encoder.vision_dim


@pytest.mark.parametrize("scales, match", [
    ((128, 192), "must start at the tower's input size 64"),
    ((64, 96), r"multiple of the tower's input size 64; \[96\]"),
    ((64, 192, 128), "distinct and ascending"),
    ((), "non-empty"),
])
def test_bad_scales_are_named(encoders, scales, match):
    inner = encoders["open_clip"][0].encoder
    with pytest.raises(ValueError, match=match):
        MultiScaleVisionEncoder(inner, scales=scales)


def test_frozen_is_the_wrapped_encoders():
    enc = MODELS.build(dict(type="MultiScaleVisionEncoder", encoder=DEMO_ENCODER, scales=(64, 128)))
    enc.frozen = False  # what LLaVAModel does for trainable=['vision_encoder']
    enc.tower.requires_grad_(True)
    assert enc.encoder.frozen is False
    enc.train()
    assert enc.tower.training
    enc(torch.randn(1, 3, 128, 128)).features.sum().backward()
    assert enc.tower.conv1.weight.grad is not None  # gradients reach the tower through every crop


def s2_model_cfg(**overrides) -> dict:
    return tiny_model_cfg(aligner=True, vision_encoder=dict(
        type="MultiScaleVisionEncoder", encoder=DEMO_ENCODER, scales=(64, 128, 192)), **overrides)


def test_llava_model_trains_with_s2_and_labels_the_base_scale():
    torch.manual_seed(0)
    model = MODELS.build(s2_model_cfg())
    assert model.adapter.vision_dim == 192 and model.num_visual_tokens == 64
    labeler = model.aligner.labeler
    assert model.vision_encoder.loaded is labeler.loaded  # one tower for encoder and labeler
    batch = tiny_batch(model)
    images = torch.randn(3, 3, 192, 192, generator=torch.Generator().manual_seed(3))
    batch["inputs"]["images"] = images * batch["inputs"]["has_image"][:, None, None, None]

    # The labels SEA trains on are the labeler's own on the base-scale image (the wrapper's dense).
    _, dense = model.vision_encoder(images[:1])
    base = F.interpolate(images[:1], size=(64, 64), mode="bicubic", align_corners=False)
    torch.testing.assert_close(dense, labeler.encode_patches(base), atol=1e-5, rtol=1e-5)

    model.train()
    before = {n: p.detach().clone() for n, p in model.adapter.named_parameters()}
    optim = OptimWrapper(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2))
    log = model.train_step(batch, optim)
    assert {"loss_lm", "loss_align"} <= set(log) and all(torch.isfinite(v) for v in log.values())
    assert all(not torch.equal(before[n], p) for n, p in model.adapter.named_parameters())
    assert all(p.grad is None or not p.requires_grad for p in model.vision_encoder.parameters())


def test_llava_model_builds_s2_on_the_meta_device():
    model = MODELS.build(s2_model_cfg(init_empty=True))
    assert model.vision_encoder.tower.conv1.weight.is_meta
    assert model.adapter.vision_dim == 192


def test_hugging_face_export_refuses_s2():
    # LlavaForConditionalGeneration runs one tower forward into its projector: no S², so no silent wrong export.
    model = MODELS.build(tiny_model_cfg(aligner=False, vision_encoder=dict(
        type="MultiScaleVisionEncoder", encoder=DEMO_ENCODER, scales=(64, 128))))
    with pytest.raises(ValueError, match=r"adapter reads D=128 features but the vision tower is 64 wide"):
        build_llava(model, None, "plain")
