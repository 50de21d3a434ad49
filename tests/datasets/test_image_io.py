"""open_image: 8-bit RGB from every mode, bounded decode, paths confined to the image root.

Expected pixels are computed here from the arrays the files were written
from (numpy), never from open_image itself.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from alignkit.datasets.image_io import (
    DEFAULT_MAX_ASPECT,
    DEFAULT_MAX_PIXELS,
    ImageError,
    ImageNotFound,
    ImageOutsideRoot,
    ImageTooLarge,
    ImageUnreadable,
    open_image,
)


def _gradient16(h=8, w=64) -> np.ndarray:
    """UInt16[h, w]: 0 .. 65535 along each row."""
    return np.tile(np.linspace(0, 65535, w).round().astype(np.uint16), (h, 1))


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    a = _gradient16()
    Image.fromarray(a).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"
        clipped = np.asarray(im.convert("RGB"))[..., 0]
    assert (clipped == 255).mean() > 0.95  # what LLaVA's convert('RGB') trains on: nearly all white
    rgb = np.asarray(open_image(tmp_path / "g16.png"))
    expected = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)  # 65535 / 255 = 257 per 8-bit step
    assert rgb.dtype == np.uint8 and rgb.shape == (*a.shape, 3)
    for c in range(3):
        assert np.array_equal(rgb[..., c], expected)
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255


def test_16_bit_big_endian_tiff_is_scaled(tmp_path):
    a = _gradient16()
    Image.frombytes("I;16B", (a.shape[1], a.shape[0]), a.astype(">u2").tobytes()).save(tmp_path / "g16b.tiff")
    with Image.open(tmp_path / "g16b.tiff") as im:
        assert im.mode == "I;16B"
    rgb = np.asarray(open_image(tmp_path / "g16b.tiff"))
    assert np.array_equal(rgb[..., 1], np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8))


def test_float_pixels_are_refused(tmp_path):
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(ImageUnreadable, match="float"):
        open_image(tmp_path / "f.tiff")


def test_ordinary_rgb_equals_llava_convert(tmp_path):
    g = np.random.default_rng(0)
    a = g.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "rgb.png")
    Image.fromarray(a[..., 0]).save(tmp_path / "gray.png")
    assert np.array_equal(np.asarray(open_image(tmp_path / "rgb.png")), a)
    assert np.array_equal(np.asarray(open_image(tmp_path / "gray.png")), np.repeat(a[..., :1], 3, axis=2))


def test_transparency_is_composited_over_white(tmp_path):
    # Hidden colour (10, 20, 30) under alpha 0, a half-transparent red, an opaque blue.
    a = np.zeros((1, 3, 4), np.uint8)
    a[0, 0] = (10, 20, 30, 0)
    a[0, 1] = (255, 0, 0, 128)
    a[0, 2] = (0, 0, 255, 255)
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    rgb = np.asarray(open_image(tmp_path / "rgba.png")).astype(int)
    assert rgb[0, 0].tolist() == [255, 255, 255]  # LLaVA's convert('RGB') would give the hidden (10, 20, 30)
    # Over white: out = a * c + (1 - a) * 255 with a = 128/255, for c = (255, 0, 0).
    half = 255 - 128 / 255 * 255
    assert rgb[0, 1, 0] == 255 and abs(rgb[0, 1, 1] - half) <= 1 and abs(rgb[0, 1, 2] - half) <= 1
    assert rgb[0, 2].tolist() == [0, 0, 255]  # opaque pixels unchanged


def test_palette_with_transparent_index_and_la(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * (256 * 3 - 6))
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    rgb = np.asarray(open_image(tmp_path / "p.png"))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [200, 100, 50]
    Image.fromarray(np.array([[[40, 0], [40, 255]]], np.uint8), "LA").save(tmp_path / "la.png")
    assert np.asarray(open_image(tmp_path / "la.png"))[0].tolist() == [[255] * 3, [40] * 3]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    # Pure cyan (C=255) and pure yellow (Y=255): RGB (0, 255, 255) and (255, 255, 0) up to JPEG error.
    a = np.zeros((16, 32, 4), np.uint8)
    a[:, :16, 0] = 255
    a[:, 16:, 2] = 255
    Image.fromarray(a, "CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    rgb = np.asarray(open_image(tmp_path / "cmyk.jpg")).astype(int)
    assert rgb.shape == (16, 32, 3)
    assert np.abs(rgb[8, 4] - [0, 255, 255]).max() <= 8
    assert np.abs(rgb[8, 28] - [255, 255, 0]).max() <= 8


# --- bounded cost ------------------------------------------------------------------------------------------------
def test_thin_strip_is_refused_from_its_header(tmp_path):
    # 3000×1: CLIP's shortest-side resize to 336 would make it 1,008,000×336 (338.7 M pixels, ~1 GB as RGB).
    Image.new("L", (3000, 1), 128).save(tmp_path / "strip.png")
    assert (tmp_path / "strip.png").stat().st_size < 200
    with pytest.raises(ImageTooLarge, match=r"3000×1, aspect ratio 3000.0 > max_aspect 50"):
        open_image(tmp_path / "strip.png")
    assert open_image(tmp_path / "strip.png", max_aspect=3000).size == (3000, 1)  # configurable
    # What the limit bounds: the encoder's shortest-side resize of an accepted image.
    side = 336
    assert side * side * DEFAULT_MAX_ASPECT == 5_644_800  # pixels at most, vs 338,688,000 for the strip


def test_huge_png_is_refused_without_decoding_and_without_pil_global_state(tmp_path):
    # 9600×9600 = 92.16 M pixels, a 1-bit image so the test itself stays cheap (11.5 MB in memory).
    Image.new("1", (9600, 9600)).save(tmp_path / "big.png")
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would be an error here
        with pytest.raises(ImageTooLarge, match="92,160,000 pixels > max_pixels 50,000,000"):
            open_image(tmp_path / "big.png")
    assert Image.MAX_IMAGE_PIXELS == before  # nothing global changed
    assert 9600 * 9600 > DEFAULT_MAX_PIXELS


def test_large_jpeg_is_decoded_reduced_within_the_pixel_limit(tmp_path):
    g = np.random.default_rng(1)
    a = np.kron(g.integers(0, 256, (60, 80, 3), dtype=np.uint8), np.ones((10, 10, 1), np.uint8))  # 600×800
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=95)
    limit = 100_000  # 800×600 = 480,000 > limit; /2 = 120,000 > limit; /4 = 200×150 = 30,000 fits
    im = open_image(tmp_path / "big.jpg", max_pixels=limit)
    assert im.size == (200, 150) and im.size[0] * im.size[1] <= limit
    # The reduced decode is a faithful downscale: 10×10 blocks become 2.5×2.5 blocks of the same colour.
    small = np.asarray(im).astype(int)
    assert np.abs(small[1::5, 1::5][:30, :40] - a[5::20, 5::20][:30, :40]).mean() < 20
    full = open_image(tmp_path / "big.jpg")  # within the default limit: decoded as it is
    assert full.size == (800, 600)
    Image.fromarray(a).save(tmp_path / "big.png")
    with pytest.raises(ImageTooLarge, match="max_pixels 100,000"):  # no cheap reduced decode for PNG
        open_image(tmp_path / "big.png", max_pixels=limit)


# --- paths -----------------------------------------------------------------------------------------------------
@pytest.fixture
def rooted(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 4), (1, 2, 3)).save(root / "sub" / "in.png")
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", root / "link.png")
    os.symlink(root / "sub" / "in.png", root / "inner_link.png")
    return root


def test_paths_are_confined_to_the_root(rooted):
    assert open_image("sub/in.png", root=rooted).getpixel((0, 0)) == (1, 2, 3)
    assert open_image("inner_link.png", root=rooted).getpixel((0, 0)) == (1, 2, 3)  # a link inside is fine
    assert open_image("sub/../sub/in.png", root=rooted).size == (4, 4)
    for path in ("../outside.png", str(rooted.parent / "outside.png"), "link.png", "sub/../../outside.png"):
        with pytest.raises(ImageOutsideRoot, match="outside the image root"):
            open_image(path, root=rooted)
        assert open_image(path, root=rooted, allow_outside_root=True).getpixel((0, 0)) == (9, 9, 9)


def test_a_root_that_is_a_symlink_is_followed(rooted, tmp_path):
    os.symlink(rooted, tmp_path / "alias")
    assert open_image("sub/in.png", root=tmp_path / "alias").size == (4, 4)
    with pytest.raises(ImageOutsideRoot):
        open_image("link.png", root=tmp_path / "alias")


def test_failures_name_the_file_and_carry_skip_reasons(tmp_path):
    from alignkit.datasets.constants import SKIP_REASONS

    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageNotFound, match="nowhere.png: does not exist"):
        open_image(tmp_path / "nowhere.png")
    with pytest.raises(ImageNotFound, match="is not a file"):
        open_image(tmp_path)
    with pytest.raises(ImageUnreadable, match="text.png: UnidentifiedImageError"):
        open_image(tmp_path / "text.png")
    for cls in (ImageNotFound, ImageUnreadable, ImageTooLarge, ImageOutsideRoot):
        assert issubclass(cls, ImageError) and cls.reason in SKIP_REASONS
    with pytest.raises(ValueError, match="max_pixels"):
        open_image(tmp_path / "text.png", max_pixels=0)
    with pytest.raises(ValueError, match="max_aspect"):
        open_image(tmp_path / "text.png", max_aspect=0.5)


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose IHDR claims width×height (8-bit gray) and whose IDAT holds no pixel data at all."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


def test_a_header_over_pils_hard_limit_is_too_large_not_unreadable(tmp_path):
    # 20000×20000 = 400 M pixels > 2 × PIL's MAX_IMAGE_PIXELS: PIL raises DecompressionBombError at open.
    _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    assert 20000 * 20000 > 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLarge, match="bomb.png"):
        open_image(tmp_path / "bomb.png", max_pixels=10**9)
    _png_header_only(tmp_path / "wide.png", 3000, 1)
    with pytest.raises(ImageTooLarge, match="aspect ratio"):  # refused from the header: no data needed
        open_image(tmp_path / "wide.png")
