"""``Compose``: run several samplers in order (SEA: similarity-weighted → window → dedup)."""
from __future__ import annotations

import torch

from alignkit.registry import SAMPLERS
from alignkit.samplers.base import BaseSampler
from alignkit.structures import PairSet


@SAMPLERS.register_module()
class Compose(BaseSampler):
    """Apply ``samplers`` one after the other, all with the same generator.

    The output is a subset of the input (each stage returns a subset of the
    previous one), and, as for every ``BaseSampler``, holds no pair with
    score <= 0. ``Compose([])`` keeps every pair with score > 0.

    Args:
        samplers: sampler instances (``BaseSampler``) or config dicts built
            through ``SAMPLERS``.

    Config (the SEA preset)::

        dict(type='Compose', samplers=[
            dict(type='SimilarityWeightedSampler'),
            dict(type='WindowSampler', window=2),
            dict(type='DedupSampler'),
        ])
    """

    def __init__(self, samplers: list | tuple = ()) -> None:
        if isinstance(samplers, (dict, BaseSampler)) or not isinstance(samplers, (list, tuple)):
            raise ValueError(
                f"samplers must be a list of samplers or config dicts, got {type(samplers).__name__}"
            )
        built = []
        for i, item in enumerate(samplers):
            if isinstance(item, dict):
                item = SAMPLERS.build(item)
            if not isinstance(item, BaseSampler):
                raise ValueError(
                    f"samplers[{i}] must be a BaseSampler or a config dict, got {type(item).__name__}"
                )
            built.append(item)
        self.samplers = built

    def sample(self, pairs: PairSet, grid: tuple[int, int], generator: torch.Generator | None) -> PairSet:
        if not self.samplers:
            # a copy, not the caller's PairSet itself
            return pairs.select(torch.arange(len(pairs), device=pairs.device))
        for sampler in self.samplers:
            # pairs were checked by Compose.__call__ and every stage returns a
            # subset, so the stages skip re-checking (a pass over all M pairs)
            pairs = sampler._call_checked(pairs, grid, generator)
        return pairs

    def __repr__(self) -> str:
        return f"Compose({self.samplers!r})"
