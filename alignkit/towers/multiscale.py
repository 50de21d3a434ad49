"""S² (Scaling on Scales) on any tower: the scales, the crops, the pooling, the preprocessing at the largest scale.

Shi et al. 2024, "When Do We Not Need Larger Vision Models?", as LLaVA runs it
(``s2wrapper.forward(tower, images, img_sizes=[336, 672, 1008], max_split_size=336)``).
The pieces both S² consumers use — :class:`~alignkit.models.MultiScaleVisionEncoder`
(features for the adapter) and :class:`~alignkit.labelers.MultiScaleLabeler`
(the labels of the same images, for ``tools/extract_labels.py``) — so the two
resize the same way and describe the same preprocessing.

Sizes are square side lengths in pixels. The base scale is the tower's input
size; every scale is k times it and is cut into k × k base-size crops.
"""
from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch.nn.functional as F
from torch import Tensor

from alignkit.utils.validate import check_image_batch, check_int

INTERPOLATION = "bicubic"  # s2wrapper's resize of the input to each scale (fp32, align_corners=False)


def square_side(name: str, size) -> int:
    """The side of a square (H, W); ValueError naming ``name`` for a rectangle."""
    h, w = size
    if h != w:
        raise ValueError(f"{name} must be square for S², got {h}x{w}")
    return int(h)


def check_scales(scales, base: int) -> tuple[int, ...]:
    """Ascending, distinct multiples of ``base`` that start with ``base`` (the tower's input size)."""
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
        raise ValueError(f"scales must be a non-empty list of image sizes in pixels, got {scales!r}")
    out = tuple(check_int("each of scales", s, low=1) for s in scales)
    if list(out) != sorted(set(out)):
        raise ValueError(f"scales must be distinct and ascending, got {list(out)}")
    if out[0] != base:
        raise ValueError(
            f"scales must start at the tower's input size {base} (the crop size and the output grid), got {list(out)}"
        )
    bad = [s for s in out if s % base]
    if bad:
        raise ValueError(f"every scale must be a multiple of the tower's input size {base}; {bad} are not")
    return out


def check_input(images, side: int) -> None:
    """ValueError unless ``images`` is (B, 3, side, side): S² takes its images at the largest scale."""
    check_image_batch(images, (side, side), "the S² encoder's or labeler's `transform`", note=" (S²'s largest scale)")


def resize(images: Tensor, side: int) -> Tensor:
    """(B, 3, S, S) -> (B, 3, side, side), bicubic in fp32 as s2wrapper does; the same tensor when S == side."""
    if tuple(images.shape[-2:]) == (side, side):
        return images
    return F.interpolate(images.float(), size=(side, side), mode=INTERPOLATION, align_corners=False).to(images.dtype)


def split_crops(images: Tensor, k: int) -> Tensor:
    """(B, 3, k·s, k·s) -> (k·k·B, 3, s, s): crop (i, j) of image b at index (i·k + j)·B + b."""
    b, c, hh, ww = images.shape
    s, t = hh // k, ww // k
    x = images.reshape(b, c, k, s, k, t).permute(2, 4, 0, 1, 3, 5)  # (k, k, B, 3, s, t)
    return x.reshape(k * k * b, c, s, t)


def merge_pool(features: Tensor, k: int, grid: tuple[int, int]) -> Tensor:
    """(k·k·B, P, D) crop features in ``split_crops`` order -> (B, P, D): the merged map, k × k average pool."""
    h, w = grid
    n, _, d = features.shape
    b = n // (k * k)
    x = features.reshape(k, k, b, h, w, d).permute(2, 5, 0, 3, 1, 4)  # (B, D, k, H, k, W)
    x = x.reshape(b, d, k * h, k * w)  # the whole image's (k·H) × (k·W) map
    pooled = F.avg_pool2d(x.float(), kernel_size=k)  # s2wrapper's 'area' resize: an exact k × k mean
    return pooled.to(features.dtype).flatten(2).transpose(1, 2)  # (B, D, H, W) -> (B, P, D)


def transform_at(transform, preprocess_cfg: dict | None, side: int):
    """``(transform, description)``: a tower's own preprocessing, producing ``side`` × ``side`` images.

    LLaVA's S² tower keeps its processor and sets its output size to the largest
    scale. ``transform`` is the tower's: an ``HFImageProcessor`` (rebuilt with
    ``image_size=side``; described by its ``fingerprint()``) or open_clip's eval
    transform (rebuilt from the tower's ``preprocess_cfg`` at ``side``; described by
    that config with ``size`` replaced, the form an open_clip labeler records).
    """
    if hasattr(transform, "processor") and callable(getattr(transform, "fingerprint", None)):  # HFImageProcessor
        out = type(transform)(processor=transform.processor, pad_to_square=transform.pad_to_square, image_size=side)
        return out, out.fingerprint()
    pre = dict(preprocess_cfg or {})
    kwargs = {k: pre[k] for k in ("mean", "std", "resize_mode", "interpolation", "fill_color") if k in pre}
    out = open_clip.image_transform((side, side), is_train=False, **kwargs)
    description = {k: list(v) if isinstance(v, tuple) else v for k, v in pre.items()}
    description["size"] = [side, side]
    return out, description
