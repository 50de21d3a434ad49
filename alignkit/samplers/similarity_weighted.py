"""``SimilarityWeightedSampler``: one label per patch, drawn with probability ∝ score (SEA Eq. 7)."""
from __future__ import annotations

from torch import Tensor

from alignkit.registry import SAMPLERS
from alignkit.samplers.base import GroupSampler
from alignkit.samplers.functional import combine_keys
from alignkit.structures import PairSet


@SAMPLERS.register_module()
class SimilarityWeightedSampler(GroupSampler):
    """Keep one pair per (image, patch), pair ``i`` with probability ``s_i / sum(s)``.

    This is Eq. 7 of the SEA paper: of the top-n labels ``L_i`` of a patch, with
    scores ``S_i``, one is picked with probability ``S_i / sum(S_i)``. Pairs with
    score <= 0 are not labels and never come out (see ``BaseSampler``), so every
    patch with at least one positive label keeps exactly one.

    Config: ``dict(type='SimilarityWeightedSampler')`` (no arguments).
    """

    weighted = True

    def group_key(self, pairs: PairSet, grid: tuple[int, int]) -> Tensor:
        h, w = grid
        return combine_keys(pairs.batch, pairs.patch, h * w)  # (M,) = batch * P + patch
