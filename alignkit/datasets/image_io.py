"""``open_image``: the one way alignkit reads an image file (datasets, label extraction, CLI tools).

A file goes through these steps, cheapest first, so that no file costs more
than ``max_pixels`` decoded pixels whatever its header claims:

1. **Path.** With a ``root``, the real path (symlinks resolved) must lie inside
   the real ``root``: ``../x.png``, an absolute path or a symlink leading out
   raise ``ImageOutsideRoot`` unless ``allow_outside_root=True``.
2. **Header.** ``Image.open`` reads only the header. An image wider than
   ``max_aspect`` times its height (or the other way round) raises
   ``ImageTooLarge``: resizing its short side to the encoder's input (CLIP's
   "shortest" mode) would make a 3000×1 strip 1,008,000×336 pixels. PIL's own
   decompression-bomb warning is silenced for this call only (its global
   ``MAX_IMAGE_PIXELS`` is left alone); a header over twice that limit
   (179 M pixels) is still refused by PIL at open, as ``ImageTooLarge``.
3. **Size.** An image of more than ``max_pixels`` pixels is decoded reduced
   when the format can do that for free (JPEG's DCT scaling, 1/2 to 1/8 per
   side, via ``Image.draft``) to the largest size within the limit; any other
   raises ``ImageTooLarge``. An image within the limit is decoded as it is, so
   its pixels equal LLaVA's ``Image.open(path).convert('RGB')`` for ordinary
   8-bit RGB/L/P files.
4. **Pixels -> 8-bit RGB.**
   - 16/32-bit integer grayscale (``I;16``, ``I;16B``, ``I``) is scaled to 8 bit
     (``round(v / 257)``: 65535 -> 255), where ``convert('RGB')`` would clip
     every value above 255 to white. 32-bit float (``F``) has no defined
     range and raises ``ImageUnreadable``.
   - Transparency (an alpha band, or a palette/grayscale ``transparency``
     entry) is composited over **white**, as Hugging Face image processors'
     ``convert_to_rgb`` does. LLaVA's ``convert('RGB')`` drops alpha and keeps
     the hidden colour, which for fully transparent pixels is whatever the
     encoder left there (often black). Opaque pixels are unchanged.
   - CMYK, YCbCr, LAB, palette and 1-bit images go through PIL's ``convert``.
   - EXIF orientation is not applied (LLaVA does not either); a multi-frame
     file (GIF, APNG) gives its first frame.

Every failure is an ``ImageError`` whose ``reason`` is the dataset's skip reason.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

from alignkit.utils.validate import check_int, check_number

DEFAULT_MAX_PIXELS = 50_000_000  # 150 MB as 8-bit RGB; a 45-MP camera photo (8192×5464) fits
DEFAULT_MAX_ASPECT = 50.0  # short side -> 336 gives at most 336 × 16,800 pixels


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is a ``SKIP_REASONS`` key, ``path`` the file."""

    reason = "unreadable_image"

    def __init__(self, path: str, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class ImageNotFound(ImageError):
    """The file does not exist (or is not a file)."""

    reason = "missing_image"


class ImageUnreadable(ImageError):
    """The file exists but cannot be decoded to RGB (corrupt, truncated, unknown format, float pixels)."""

    reason = "unreadable_image"


class ImageTooLarge(ImageError):
    """More pixels than ``max_pixels`` (and no cheap reduced decode), or an aspect ratio over ``max_aspect``."""

    reason = "image_too_large"


class ImageOutsideRoot(ImageError):
    """The path leads outside the image root (``..``, an absolute path, a symlink)."""

    reason = "image_outside_root"


def resolve_image_path(path: str | os.PathLike, root: str | os.PathLike | None = None,
                       allow_outside_root: bool = False) -> str:
    """``root/path``; with a ``root`` and without ``allow_outside_root``, its real path must stay inside
    the real ``root`` (``ImageOutsideRoot`` otherwise)."""
    path = os.fspath(path)
    if root is None:
        return path
    full = os.path.join(os.fspath(root), path)
    if allow_outside_root:
        return full
    real_root = os.path.realpath(root)
    real = os.path.realpath(full)
    if os.path.commonpath([real_root, real]) != real_root:
        raise ImageOutsideRoot(full, f"resolves to {real}, outside the image root {real_root} "
                                     "(pass allow_outside_root=True to read it anyway)")
    return full


def _check_header(path: str, image: Image.Image, max_aspect: float) -> None:
    w, h = image.size
    if w < 1 or h < 1:
        raise ImageUnreadable(path, f"has size {w}×{h}")
    if max(w, h) > max_aspect * min(w, h):
        raise ImageTooLarge(path, f"is {w}×{h}, aspect ratio {max(w, h) / min(w, h):.1f} > max_aspect {max_aspect:g}")


def _reduce_on_decode(path: str, image: Image.Image, max_pixels: int) -> None:
    """Within ``max_pixels``, or JPEG-draft to the largest scale that fits, or ``ImageTooLarge``."""
    w, h = image.size
    if w * h <= max_pixels:
        return
    if image.format == "JPEG":
        for scale in (2, 4, 8):  # the scales a JPEG decoder gives for free
            rw, rh = -(-w // scale), -(-h // scale)
            if rw * rh <= max_pixels:
                image.draft("RGB" if image.mode in ("RGB", "YCbCr") else image.mode, (rw, rh))
                if image.size[0] * image.size[1] <= max_pixels:
                    return
                break
    raise ImageTooLarge(path, f"is {w}×{h} = {w * h:,} pixels > max_pixels {max_pixels:,}")


def _to_rgb(path: str, image: Image.Image) -> Image.Image:
    """Decode ``image`` and return it as 8-bit RGB (module docstring, step 4)."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(image, dtype=np.int64)  # decodes; byte order handled by PIL
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "F":
        raise ImageUnreadable(path, "has 32-bit float pixels, whose range is undefined")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # a copy even for RGB, as LLaVA's: the file's own image is closed after


def open_image(
    path: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect: float = DEFAULT_MAX_ASPECT,
) -> Image.Image:
    """The image at ``path`` (relative to ``root`` if given) as an 8-bit RGB PIL image (module docstring).

    Raises ``ImageNotFound``, ``ImageOutsideRoot``, ``ImageTooLarge`` or
    ``ImageUnreadable`` (all ``ImageError``, a ``ValueError``), naming the file.
    """
    check_int("max_pixels", max_pixels, low=1)
    check_number("max_aspect", max_aspect, low=1)
    full = resolve_image_path(path, root, allow_outside_root)
    if not os.path.isfile(full):
        raise ImageNotFound(full, "does not exist" if not os.path.exists(full) else "is not a file")
    try:
        with warnings.catch_warnings():
            # Our max_pixels replaces PIL's bomb warning, without touching Image.MAX_IMAGE_PIXELS.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(full) as image:
                _check_header(full, image, max_aspect)
                _reduce_on_decode(full, image, max_pixels)
                return _to_rgb(full, image)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(full, f"{e}") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, MemoryError) as e:
        # OSError covers UnidentifiedImageError and truncated files; the others are decoders' errors.
        raise ImageUnreadable(full, f"{type(e).__name__}: {e}") from None
