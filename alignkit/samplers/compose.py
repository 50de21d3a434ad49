"""``Compose``: run several samplers in order (SEA: similarity-weighted → window → dedup)."""
from __future__ import annotations

import re

import torch

from alignkit.registry import SAMPLERS
from alignkit.samplers.base import BaseSampler, check_pairs
from alignkit.structures import PairSet
from alignkit.utils.validate import check_grid


def stage_name(sampler: BaseSampler) -> str:
    """``SimilarityWeightedSampler`` -> ``similarity_weighted``: the name of a stage in logs."""
    name = type(sampler).__name__
    name = name[: -len("Sampler")] if name.endswith("Sampler") and name != "Sampler" else name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@SAMPLERS.register_module()
class Compose(BaseSampler):
    """Apply ``samplers`` one after the other, all with the same generator.

    The output is a subset of the input (each stage returns a subset of the
    previous one), and, as for every ``BaseSampler``, holds no pair with
    score <= 0. ``Compose([])`` keeps every pair with score > 0. The input is
    checked once, here; the stages, which only ever see subsets of it, skip
    their own checks. :meth:`sample_counted` also reports how many pairs each
    stage kept (``SEAAligner`` logs them as ``align_pairs_after_<stage>``).

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
        names = [stage_name(s) for s in built]
        if len(set(names)) != len(names):  # the same sampler twice: number the stages
            names = [f"{i}_{n}" for i, n in enumerate(names)]
        self.stage_names = names

    def sample(self, pairs: PairSet, grid: tuple[int, int], generator: torch.Generator | None) -> PairSet:
        if not self.samplers:
            # a copy, not the caller's PairSet itself
            return pairs.select(torch.arange(len(pairs), device=pairs.device))
        for _, pairs in self._stages(pairs, grid, generator):
            pass
        return pairs

    def sample_counted(
        self, pairs: PairSet, grid: tuple[int, int], generator: torch.Generator | None = None
    ) -> tuple[PairSet, dict[str, int]]:
        """``self(pairs, grid, generator)`` and ``{stage name: pairs kept after it}``, in stage order."""
        grid = check_grid(grid)
        check_pairs(pairs, grid)
        if not self.samplers:
            return self._call_checked(pairs, grid, generator), {}
        counts = {}
        for name, pairs in self._stages(pairs, grid, generator):
            counts[name] = len(pairs)
        return pairs, counts

    def _stages(self, pairs: PairSet, grid: tuple[int, int], generator: torch.Generator | None):
        """``(stage name, pairs kept)`` after each stage. The pairs were checked once (``__call__``,
        ``sample_counted``) and every stage returns a subset, so the stages skip re-checking (a pass
        over all M pairs)."""
        for name, sampler in zip(self.stage_names, self.samplers):
            pairs = sampler._call_checked(pairs, grid, generator)
            yield name, pairs

    def __repr__(self) -> str:
        return f"Compose({self.samplers!r})"
