"""The one primitive behind every SEA sampler: group by a key, keep one member per group.

Pure tensor functions, no state, no registry. ``SimilarityWeightedSampler``,
``WindowSampler`` and ``DedupSampler`` differ only in the key they build and
in whether the pick is weighted; the work is all here.

How the pick is vectorised (no loop over groups, no sort of the M members):

1. every member draws a random priority: ``u ~ U[0, 1)`` for a uniform pick, or
   ``log(1 - u) / w`` for a pick with probability ``w_i / sum(w)`` within its
   group. The weighted form is the exponential race: ``-log(1 - u) / w`` is an
   ``Exp(w)`` waiting time, and the first of several independent exponential
   clocks to ring is clock ``i`` with probability ``w_i / sum(w)``; the largest
   ``log(1 - u) / w`` is the smallest waiting time. (Same law as Gumbel-max.)
2. ``group_argmax``: a ``scatter_reduce('amax')`` gives every group's largest
   priority; the members that reach it are the winners, and a second
   ``scatter_reduce('amin')`` over the (few) winners' indices breaks exact ties
   towards the lowest index, so exactly one member per group survives.

The draw is on float32's 24-bit grid (cheaper than float64: this runs on
~1.5 M candidates per step); the tie-break keeps "exactly one per group" exact,
and the probabilities are right to about 2**-24.

Ineligible members (SEA: score <= 0, not a label) take priority ``-inf`` rather
than being filtered out first: masking costs one pass, filtering would copy
every field of the M pairs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

# A key range up to this many times M (plus a constant) is used as-is for the
# per-group buffers; a sparser key is first compacted with ``torch.unique``.
_DENSE_FACTOR = 4
_DENSE_SLACK = 4096
_INT64_MAX = 2**63 - 1


def combine_keys(major: Tensor, minor: Tensor, minor_size: int) -> Tensor:
    """One Long key ``major * minor_size + minor`` for a two-part group key.

    ``minor`` must lie in ``[0, minor_size)``. Raises ``ValueError`` instead of
    overflowing int64, i.e. when ``max(major) * minor_size + minor_size - 1``
    exceeds ``2**63 - 1`` (for the SEA keys that means a batch index past
    ~1.6e13 on a 24x24 grid: never in practice, but checked, not assumed).

    Args:
        major: Long[M] the outer part (e.g. the batch index), >= 0.
        minor: Long[M] the inner part (e.g. the patch or window index).
        minor_size: number of distinct values ``minor`` can take.

    Returns:
        Long[M] the combined key.
    """
    minor_size = int(minor_size)
    if minor_size < 1:
        raise ValueError(f"minor_size must be a positive int, got {minor_size}")
    if major.numel():
        top = int(major.max())
        if top * minor_size + (minor_size - 1) > _INT64_MAX:
            raise ValueError(
                f"combined key overflows int64: major id {top} * minor_size {minor_size} "
                f"must stay below 2**63"
            )
    return torch.add(minor.long(), major.long(), alpha=minor_size)  # (M,) one fused pass


def group_argmax(key: Tensor, priority: Tensor) -> Tensor:
    """Index of the member with the largest ``priority`` in every group of ``key``.

    Deterministic: exact ties go to the lowest index. This is the
    non-random half of :func:`keep_one_per_group`.

    Args:
        key: Long[M] group of every member, >= 0 (any values; sparse keys are
            compacted first).
        priority: Float[M] finite or infinite values; NaN raises ``ValueError``.

    Returns:
        Long[N] one index per distinct key, sorted ascending (so selecting with
        it keeps the input order). N = number of distinct keys.
    """
    if key.dim() != 1 or priority.shape != key.shape:
        raise ValueError(
            f"key and priority must be 1-D of one length M, got shapes {tuple(key.shape)} "
            f"and {tuple(priority.shape)}"
        )
    if key.dtype.is_floating_point or key.dtype == torch.bool:
        raise ValueError(f"key must be an integer tensor, got {key.dtype}")
    if not priority.dtype.is_floating_point:
        raise ValueError(f"priority must be a float tensor, got {priority.dtype}")
    m = key.shape[0]
    if m == 0:
        return torch.zeros(0, dtype=torch.long, device=key.device)
    # A NaN would make its whole group keep nothing. The sum is NaN if any
    # priority is (or if both infinities occur): only then pay for isnan.
    if math.isnan(priority.sum().item()) and bool(torch.isnan(priority).any()):
        raise ValueError("priority contains NaN; priorities must be comparable numbers")
    key = key.long()
    lo, hi = (int(v) for v in torch.aminmax(key))
    if lo < 0:
        raise ValueError(f"key has negative value {lo}; group keys are >= 0")
    num_groups = hi + 1
    if num_groups > _DENSE_FACTOR * m + _DENSE_SLACK:
        # Sparse keys (e.g. raw word ids of a huge vocabulary): per-group buffers
        # of size max(key) would cost more than sorting M keys once.
        _, key = torch.unique(key, return_inverse=True)
        num_groups = int(key.max()) + 1

    # Largest priority of each group; only groups that occur get a finite value.
    best = torch.full((num_groups,), float("-inf"), dtype=priority.dtype, device=key.device)
    best.scatter_reduce_(0, key, priority, reduce="amax")  # (G,)
    # (M,) -> (N',): N' >= N members that reach their group's maximum.
    winners = (priority == best.index_select(0, key)).nonzero().squeeze(1)
    winner_key = key.index_select(0, winners)
    # Tie-break: the lowest index among a group's winners.
    first = torch.full((num_groups,), m, dtype=torch.long, device=key.device)
    first.scatter_reduce_(0, winner_key, winners, reduce="amin")  # (G,)
    unique = first.index_select(0, winner_key) == winners
    return winners.index_select(0, unique.nonzero().squeeze(1))  # (N,), ascending


def race_priority(
    num: int,
    weight: Tensor | None,
    eligible: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Float32[M] random priorities: the largest of a group wins with probability ``w_i / sum(w)`` (or uniformly).

    No input checks (see :func:`keep_one_per_group`). Members with
    ``eligible == False`` get ``-inf``: they win only a group with no eligible
    member, which the caller then drops.
    """
    draw_device = generator.device if generator is not None else device
    # (M,) uniform on the float32 grid {0, 2**-24, ..., 1 - 2**-24}; drawn on the
    # generator's device so a given generator state always gives the same numbers.
    priority = torch.rand(num, generator=generator, device=draw_device).to(device)
    if weight is not None:
        # exponential race: log(1 - u) <= 0 is minus an Exp(1) time; divided by w
        # it is minus an Exp(w) time, and the largest is the earliest clock.
        priority = torch.rsub(priority, 1.0).log_().div_(weight)
    if eligible is not None:
        priority.masked_fill_(~eligible, float("-inf"))
    return priority


def keep_one_per_group(
    key: Tensor,
    weight: Tensor | None = None,
    generator: torch.Generator | None = None,
    eligible: Tensor | None = None,
) -> Tensor:
    """Keep one random member of every group of ``key``.

    Within a group, eligible member ``i`` is kept with probability
    ``w_i / sum_group(w)`` when ``weight`` is given, uniformly otherwise. Groups
    draw independently. A group with no eligible member keeps nothing.

    The draw is resolved on float32's 24-bit grid: a probability can be off by
    about 2**-24 (6e-8), through exact ties (broken towards the lower index)
    and the granularity of the uniform draw: telling that apart from exact
    would take some 10**14 draws.

    Args:
        key: Long[M] group of every member, >= 0.
        weight: Float[M] weights, positive and finite wherever ``eligible``,
            or ``None`` for a uniform pick.
        generator: source of randomness; its device is where the random numbers
            are drawn (then moved to ``key``'s device), so a fixed generator gives
            the same result for the same input. ``None`` uses torch's default
            generator of ``key``'s device.
        eligible: Bool[M] members that may be kept, or ``None`` for all.

    Returns:
        Long[N] the kept indices, one per group with an eligible member, sorted
        ascending.
    """
    if key.dim() != 1:
        raise ValueError(f"key must be 1-D (M,), got shape {tuple(key.shape)}")
    m = key.shape[0]
    if eligible is not None and (eligible.shape != key.shape or eligible.dtype != torch.bool):
        raise ValueError(
            f"eligible must be a bool tensor shaped like key {tuple(key.shape)}, "
            f"got {eligible.dtype} {tuple(eligible.shape)}"
        )
    if weight is not None:
        if weight.shape != key.shape:
            raise ValueError(f"weight shape {tuple(weight.shape)} != key shape {tuple(key.shape)}")
        if not weight.dtype.is_floating_point:
            raise ValueError(f"weight must be a float tensor, got {weight.dtype}")
        bad = ~((weight > 0) & torch.isfinite(weight))
        if eligible is not None:
            bad &= eligible
        if m and bool(bad.any()):
            value = weight[bad][0].item()
            raise ValueError(f"weight must be positive and finite where eligible, got a weight of {value}")
    if m == 0:
        return torch.zeros(0, dtype=torch.long, device=key.device)
    return keep_one_per_group_unchecked(key, weight, generator, eligible)


def keep_one_per_group_unchecked(
    key: Tensor, weight: Tensor | None, generator: torch.Generator | None, eligible: Tensor | None
) -> Tensor:
    """:func:`keep_one_per_group` without the weight checks, for callers that validated already.

    Wrong weights (<= 0, NaN, inf where eligible) give wrong draws, not errors.
    """
    priority = race_priority(key.shape[0], weight, eligible, generator, key.device)  # (M,)
    kept = group_argmax(key, priority)  # (G,)
    if eligible is not None:
        # drop groups with no eligible member
        kept = kept.index_select(0, eligible.index_select(0, kept).nonzero().squeeze(1))
    return kept
