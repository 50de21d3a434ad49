"""Samplers: pick the (patch, word) pairs the align loss trains on.

Importing this package registers every sampler in ``alignkit.registry.SAMPLERS``.
"""
from alignkit.samplers.base import BaseSampler, GroupSampler
from alignkit.samplers.compose import Compose
from alignkit.samplers.dedup import DedupSampler
from alignkit.samplers.functional import (
    combine_keys,
    group_argmax,
    keep_one_per_group,
    keep_one_per_group_unchecked,
    race_priority,
)
from alignkit.samplers.similarity_weighted import SimilarityWeightedSampler
from alignkit.samplers.window import WindowSampler

__all__ = [
    "BaseSampler",
    "Compose",
    "DedupSampler",
    "GroupSampler",
    "SimilarityWeightedSampler",
    "WindowSampler",
    "combine_keys",
    "group_argmax",
    "keep_one_per_group",
    "keep_one_per_group_unchecked",
    "race_priority",
]
