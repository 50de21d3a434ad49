"""``WindowSampler``: one pair per k×k window of patches (SEA's localised sampling)."""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from alignkit.registry import SAMPLERS
from alignkit.samplers.base import GroupSampler
from alignkit.samplers.functional import combine_keys
from alignkit.structures import PairSet
from alignkit.utils.validate import check_int


@SAMPLERS.register_module()
class WindowSampler(GroupSampler):
    """Keep one pair, uniformly at random, per ``window × window`` block of the patch grid of each image.

    Patch ``p`` sits at row ``p // W``, column ``p % W`` and belongs to window
    ``(row // window, col // window)``. When ``window`` does not divide the grid
    (SigLIP's 27×27 with ``window=2``) the last row and column of windows are
    partial (2×1, 1×2, 1×1) windows: they are kept, not dropped, and compete
    like full ones. A 24×24 grid gives 144 windows per image, 27×27 gives 196.

    In SEA this runs after ``SimilarityWeightedSampler``, so each patch brings
    one pair. If several pairs of one patch reach it, it still keeps exactly one
    pair per window, drawn uniformly over the window's pairs (not its patches).

    Args:
        window: side k of the square window, an int >= 1 (the paper uses 2;
            1 keeps one pair per patch, uniformly).

    Config: ``dict(type='WindowSampler', window=2)``.
    """

    def __init__(self, window: int = 2) -> None:
        self.window = check_int("window", window, low=1)

    def group_key(self, pairs: PairSet, grid: tuple[int, int]) -> Tensor:
        h, w = grid
        k = self.window
        rows_of_windows = -(-h // k)  # ceil: the partial edge windows count
        cols_of_windows = -(-w // k)
        row = torch.div(pairs.patch, w, rounding_mode="floor")  # (M,)
        col = pairs.patch - row * w
        window_id = torch.div(row, k, rounding_mode="floor") * cols_of_windows + torch.div(
            col, k, rounding_mode="floor"
        )  # (M,) in [0, rows_of_windows * cols_of_windows)
        return combine_keys(pairs.batch, window_id, rows_of_windows * cols_of_windows)

    def __repr__(self) -> str:
        return f"WindowSampler(window={self.window})"
