"""Argument checks shared by every component: one wording for every "must be an int >= 1" error.

Each check returns the value (normalised) or raises ``ValueError`` naming the
argument, what was expected and what came in. ``True``/``False`` are never
accepted as numbers (``isinstance(True, int)`` holds in Python).
"""
from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import torch


def is_int(value: Any) -> bool:
    """An integer that is not a bool (Python ints, numpy integers)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _range_text(low, high) -> str:
    if low is None and high is None:
        return "an int"
    if high is None:
        return f"an int >= {low}"
    if low is None:
        return f"an int <= {high}"
    return f"an int in [{low}, {high}]"


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int, ``low <= value <= high`` (either bound may be None)."""
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {_range_text(low, high)}, got {value!r}")
    return int(value)


def check_ints(name: str, values: Any, low: int | None = 1) -> list[int]:
    """A non-empty list of ints ``>= low``."""
    values = list(values) if isinstance(values, (list, tuple)) else values
    if not isinstance(values, list) or not values or not all(is_int(v) and (low is None or v >= low) for v in values):
        raise ValueError(f"{name} must be a non-empty list of ints >= {low}, got {values!r}")
    return [int(v) for v in values]


def check_number(name: str, value: Any, low: float | None = None, allow_nan: bool = False) -> float:
    """``value`` as a float (an int or a float, not a bool), ``>= low``; NaN only with ``allow_nan``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and math.isnan(value):
        ok = allow_nan
    elif ok and low is not None:
        ok = value >= low
    if not ok:
        raise ValueError(f"{name} must be a number{f' >= {low}' if low is not None else ''}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` is ``True`` or ``False`` (not 0, 1 or ``'yes'``)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence) -> Any:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_grid(grid: Any) -> tuple[int, int]:
    """``grid`` as ``(H, W)`` ints; ValueError unless it is two positive ints (2.7 and True are not ints)."""
    try:
        h, w = grid
        if isinstance(h, bool) or isinstance(w, bool):
            raise TypeError
        h, w = operator.index(h), operator.index(w)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be a pair (H, W) of positive ints, got {grid!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"grid must be a pair (H, W) of positive ints, got {grid!r}")
    return h, w


def as_pair(name: str, value: Any) -> tuple[int, int]:
    """A positive int ``n`` as ``(n, n)``, or a pair ``(H, W)`` of positive ints, as ints."""
    if is_int(value) and value > 0:
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be a positive int or a pair (H, W) of them, got {value!r}")


def check_image_batch(images: Any, size: tuple[int, int], preprocess: str, note: str = "") -> None:
    """ValueError unless ``images`` is a (B, 3, H, W) tensor at ``size`` (H, W); the message names the
    expected size (with ``note`` after it) and what to ``preprocess`` with."""
    h, w = size
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, {h}, {w}) tensor{note}, got {shape}")
    if tuple(images.shape[2:]) != (h, w):
        raise ValueError(f"images are {images.shape[2]}x{images.shape[3]} pixels but the encoder expects {h}x{w}"
                         f"{note}; preprocess with {preprocess}")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def as_dtype(name: str, value: Any) -> torch.dtype | None:
    """None, a ``torch.dtype`` or a name of :data:`DTYPES` (configs and command lines), as a dtype (or None)."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        raise ValueError(f"{name} must be None or one of {sorted(DTYPES)}, got {value!r}")
    return DTYPES[value]
