"""MultiScaleLabeler: S²'s labels from S²'s images, online and through tools/extract_labels.py.

The demo's tiny random-weight open_clip CLIP ViT (64 px, 8x8 grid) under S² at
64/128/192 px. The labels SEA trains on online (the S² encoder's base-scale
dense, labelled by the aligner's labeler) must equal the labels of a cache that
``tools/extract_labels.py`` writes with the config's ``labeler``, and the cache
must be accepted by the S² model and dataset and refused by a plain 64-px one.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import WORDS, tiny_model_cfg
from PIL import Image

from alignkit.cli.extract_labels import main as extract
from alignkit.datasets.image_processor import OpenCLIPImageProcessor
from alignkit.labelers import MultiScaleLabeler
from alignkit.labelers.cache import LabelCache, LabelCacheError, check_label_cache
from alignkit.registry import LABELERS, MODELS
from alignkit.testing.demo import DEMO_CAPTIONS, write_demo_data

SEED = 7
SCALES = (64, 128, 192)
INNER = dict(type="CLIPTopNLabeler", model_name="alignkit-demo-vit", pretrained=None, word_list=list(WORDS), top_n=3)
S2_LABELER = dict(type="MultiScaleLabeler", labeler=INNER, scales=SCALES)


def s2_model_cfg() -> dict:
    cfg = tiny_model_cfg(aligner=True, vision_encoder=dict(
        type="MultiScaleVisionEncoder", scales=SCALES,
        encoder=dict(type="OpenCLIPVisionEncoder", model_name="alignkit-demo-vit", pretrained=None)))
    # The labeler config names no model: LLaVAModel fills in the encoder's (share_tower looks inside both wrappers).
    cfg["aligner"]["labeler"] = dict(type="MultiScaleLabeler", scales=SCALES,
                                     labeler=dict(type="CLIPTopNLabeler", word_list=list(WORDS), top_n=3))
    return cfg


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path_factory.mktemp("bank")))
    torch.manual_seed(SEED)
    yield MODELS.build(s2_model_cfg()).eval()
    mp.undo()


def test_labels_are_the_base_scale_of_the_s2_image(model):
    labeler, encoder = model.aligner.labeler, model.vision_encoder
    assert type(labeler).__name__ == "MultiScaleLabeler" and labeler.loaded is encoder.loaded
    images = torch.randn(2, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    base = F.interpolate(images, size=(64, 64), mode="bicubic", align_corners=False)
    dense = labeler.encode_patches(images)
    torch.testing.assert_close(dense, labeler.labeler.encode_patches(base), atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(encoder(images).dense, dense, atol=1e-5, rtol=1e-5)  # what training labels
    assert labeler.grid == encoder.grid and labeler.words == labeler.labeler.words
    with pytest.raises(ValueError, match=r"images are 64x64 pixels but the encoder expects 192x192"):
        labeler.encode_patches(base)
    # 192 -> 64 is an exact factor 3, where bicubic without antialiasing samples pixels 3i + 1 (any kernel
    # would); at 128 -> 64 the kernel shows: S² resizes bicubic, as s2wrapper does.
    two = MultiScaleLabeler(labeler.labeler, scales=(64, 128))
    half = images[:, :, :128, :128]
    bicubic = F.interpolate(half, size=(64, 64), mode="bicubic", align_corners=False)
    bilinear = F.interpolate(half, size=(64, 64), mode="bilinear", align_corners=False)
    inner = labeler.labeler
    torch.testing.assert_close(two.encode_patches(half), inner.encode_patches(bicubic), atol=0, rtol=0)
    assert not torch.allclose(inner.encode_patches(bicubic), inner.encode_patches(bilinear), atol=1e-3)


def test_fingerprint_names_the_scales_and_the_largest_scales_transform(model):
    labeler = model.aligner.labeler
    fp = labeler.fingerprint()
    assert fp["labeler"] == "MultiScaleLabeler" and fp["wrapped_labeler"] == "CLIPTopNLabeler"
    assert fp["scales"] == [64, 128, 192] and fp["image_size"] == [192, 192]
    assert fp["transform"]["size"] == [192, 192]
    assert labeler.transform(Image.new("RGB", (250, 180), (30, 60, 90))).shape == (3, 192, 192)


def test_a_wrapper_config_cannot_wrap_itself():
    with pytest.raises(ValueError, match="cannot wrap another"):
        LABELERS.build(dict(type="MultiScaleLabeler", labeler=S2_LABELER, scales=SCALES))


def test_extract_labels_cache_equals_the_online_labels_and_is_checked(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path / "bank"))
    ann = write_demo_data(tmp_path / "data")
    label_data = dict(ann_file=ann, image_folder=str(tmp_path / "data"), batch_size=8, num_workers=0, shard_size=16)
    config = tmp_path / "s2_labels.py"
    config.write_text("custom_imports = dict(imports=['alignkit.testing.demo'], allow_failed_imports=False)\n"
                      f"labeler = {S2_LABELER!r}\nlabel_data = {label_data!r}\n", encoding="utf-8")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)  # the same random tower as the model's
        assert extract([str(config), "--out", str(tmp_path / "cache"), "--device", "cpu", "--no-progress"]) == 0
    cache = LabelCache(tmp_path / "cache")

    # The S² model and its 192-px dataset accept the cache; a plain 64-px dataset does not.
    labeler, encoder = model.aligner.labeler, model.vision_encoder
    s2_pixels = OpenCLIPImageProcessor(model_name="alignkit-demo-vit", image_size=192)
    check_label_cache(cache, labeler=labeler, grid=encoder.grid, image_processor=s2_pixels)
    with pytest.raises(LabelCacheError, match=r"transform\.image_size: cache has \[192, 192\].*\[64, 64\]"):
        check_label_cache(cache, labeler=labeler, grid=encoder.grid,
                          image_processor=OpenCLIPImageProcessor(model_name="alignkit-demo-vit"))

    # Offline labels = the labels training computes online from the encoder's dense output.
    names = list(DEMO_CAPTIONS)[:4]
    ids = [f"{name}-0" for name in names]
    images = []
    for name in names:
        with Image.open(tmp_path / "data" / "images" / f"{name}.png") as im:
            images.append(s2_pixels(im))
    with torch.no_grad():
        online = labeler.label(encoder(torch.stack(images)).dense)
    offline = cache.get_batch(ids)
    assert torch.equal(offline.words, online.words.long())
    torch.testing.assert_close(offline.scores, online.scores.float(), atol=1e-3, rtol=0)  # stored as fp16
