"""The sampler contract: ``BaseSampler`` (validation, the score > 0 rule) and ``GroupSampler``.

A sampler maps ``(pairs, grid, generator) -> PairSet`` and only ever returns a
subset of its input: rows of ``pairs``, unchanged, in their input order. Every
SEA sampler is a ``GroupSampler``: it builds one Long key per pair and keeps one
pair per key (see :mod:`alignkit.samplers.functional`).
"""
from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod

import torch
from torch import Tensor

from alignkit.samplers.functional import keep_one_per_group_unchecked
from alignkit.structures import PairSet
from alignkit.utils.validate import check_grid


def check_pairs(pairs: PairSet, grid: tuple[int, int]) -> None:
    """Raise ``ValueError`` naming the field for input no sampler can handle.

    Rejected: a non-``PairSet``; NaN or infinite ``pairs.score``; negative ids;
    ``pairs.patch`` ids outside the ``H * W`` patches of ``grid``.
    """
    if not isinstance(pairs, PairSet):
        raise ValueError(f"pairs must be a PairSet, got {type(pairs).__name__}")
    if not len(pairs):
        return
    h, w = grid
    # A finite sum proves every score finite in one cheap pass; only a
    # non-finite sum (a NaN, an inf, or an overflow) pays for the exact check.
    if not math.isfinite(pairs.score.sum().item()):
        finite = torch.isfinite(pairs.score)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            raise ValueError(
                f"pairs.score must be finite, got {pairs.score[i].item()} at pair {i} "
                f"({int((~finite).sum())} non-finite scores)"
            )
    # One host sync for the id checks instead of one per statistic.
    batch_lo, word_lo, patch_lo, patch_hi = torch.stack(
        [pairs.batch.min(), pairs.word.min(), *torch.aminmax(pairs.patch)]
    ).tolist()
    if batch_lo < 0:
        raise ValueError(f"pairs.batch has negative id {batch_lo}; image ids are >= 0")
    if word_lo < 0:
        raise ValueError(
            f"pairs.word has id {word_lo}; word ids are >= 0 (empty slots, -1, are not pairs)"
        )
    if patch_lo < 0 or patch_hi >= h * w:
        bad = patch_lo if patch_lo < 0 else patch_hi
        raise ValueError(
            f"pairs.patch has id {bad}, but grid {(h, w)} holds patches 0..{h * w - 1}"
        )


class BaseSampler(metaclass=ABCMeta):
    """A sampler: ``sampler(pairs, grid, generator=None) -> PairSet``, a subset of ``pairs``.

    Contract, enforced here for every subclass:

    - the output holds rows of the input, unchanged, in input order;
    - bad input raises ``ValueError`` naming the field and the value: a NaN or
      infinite ``pairs.score``, a negative id, a ``pairs.patch`` id ``>= H * W``,
      a ``grid`` that is not two positive ints. Nothing is silently clipped;
    - **a pair with score <= 0 never comes out.** Such a pair is not a label:
      SEA keeps only words with positive similarity, and the Eq. 7 weights
      ``s_i / sum(s)`` must be positive to be probabilities. These pairs never
      win a draw, and whatever a subclass returns with score <= 0 is dropped
      here (a labeler with ``min_score = 0`` never emits them anyway);
    - an empty ``PairSet`` gives an empty ``PairSet``;
    - the same ``generator`` state gives the same output.

    Subclasses implement :meth:`sample`.
    """

    def __call__(self, pairs: PairSet, grid: tuple[int, int], generator: torch.Generator | None = None) -> PairSet:
        grid = check_grid(grid)
        check_pairs(pairs, grid)
        return self._call_checked(pairs, grid, generator)

    def _call_checked(self, pairs: PairSet, grid: tuple[int, int], generator: torch.Generator | None) -> PairSet:
        """``__call__`` after validation: for ``Compose``, whose stages get subsets of checked pairs."""
        if not len(pairs):
            return take(pairs, torch.zeros(0, dtype=torch.long, device=pairs.device))
        out = self.sample(pairs, grid, generator)
        positive = out.score > 0  # (N,): the output is small, this pass is cheap
        if not bool(positive.all()):
            out = take(out, positive.nonzero().squeeze(1))
        return out

    @abstractmethod
    def sample(self, pairs: PairSet, grid: tuple[int, int], generator: torch.Generator | None) -> PairSet:
        """The subset of ``pairs`` to keep, as ``pairs.select(index)`` with ascending ``index``.

        ``pairs`` is validated and non-empty but may hold pairs with score <= 0:
        they are not labels, so they must not take the place of a pair with
        score > 0 (``GroupSampler`` gives them no chance); any that are returned
        are dropped by ``__call__``.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GroupSampler(BaseSampler):
    """Keep one pair per group of :meth:`group_key`: by score (Eq. 7) if ``weighted``, else uniformly.

    Pairs with score <= 0 are ineligible: a group keeps one of its pairs with
    score > 0, or nothing when it has none.
    """

    weighted: bool = False

    @abstractmethod
    def group_key(self, pairs: PairSet, grid: tuple[int, int]) -> Tensor:
        """Long[M] key, >= 0: pairs with equal keys compete, one of them is kept."""

    def sample(self, pairs: PairSet, grid: tuple[int, int], generator: torch.Generator | None) -> PairSet:
        key = self.group_key(pairs, grid)  # (M,)
        eligible = pairs.score > 0  # (M,)
        # Scores were checked finite by __call__, so the weights are positive and
        # finite wherever eligible: the unchecked primitive saves three passes.
        weight = pairs.score if self.weighted else None
        keep = keep_one_per_group_unchecked(key, weight, generator, eligible)  # (N,)
        return take(pairs, keep)


def take(pairs: PairSet, index: Tensor) -> PairSet:
    """``pairs.select(index)`` for a Long ``index``, through ``index_select`` (faster than ``[]`` on CPU)."""
    return PairSet(
        pairs.batch.index_select(0, index),
        pairs.patch.index_select(0, index),
        pairs.word.index_select(0, index),
        pairs.score.index_select(0, index),
    )
