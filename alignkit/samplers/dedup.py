"""``DedupSampler``: at most one pair per word in the batch, so InfoNCE sees no false negatives."""
from __future__ import annotations

from torch import Tensor

from alignkit.registry import SAMPLERS
from alignkit.samplers.base import GroupSampler
from alignkit.structures import PairSet


@SAMPLERS.register_module()
class DedupSampler(GroupSampler):
    """Keep one pair, uniformly at random, per word among the pairs given.

    Two pairs with the same word would be each other's negatives in the InfoNCE
    of Eq. 9 while sharing one target embedding; keeping one removes these
    false negatives. Every word present keeps exactly one pair.

    Scope: the pairs given, i.e. the local batch of one process (the paper's
    choice, see docs/design.md). A global variant across data-parallel ranks would
    need an all-gather that tolerates a different number of pairs on every rank
    before deduplicating; this class does no communication.

    Config: ``dict(type='DedupSampler')`` (no arguments).
    """

    def group_key(self, pairs: PairSet, grid: tuple[int, int]) -> Tensor:
        return pairs.word  # (M,) word ids are >= 0 (checked by BaseSampler)
