"""``LengthGroupedSampler``: LLaVA-1.5's modality- and length-grouped batches (stage 2).

LLaVA (``group_by_modality_length=True``) orders an epoch so that a global step
never mixes image and text-only samples and its per-device batches have similar
lengths:

1. per modality, shuffle, cut into megabatches of ``num_chunks * batch_size``
   (``num_chunks`` = devices × gradient-accumulation steps), sort each
   megabatch by length (longest first) and deal it into ``num_chunks`` chunks of
   near-equal total length;
2. shuffle the full megabatches of both modalities together; the two last
   (partial) megabatches are merged into one mixed megabatch that goes first if
   it is full, last otherwise.

Lengths are the dataset's ``modality_lengths`` (word counts, negative for
text-only rows). Per-device batches are consecutive ``batch_size`` slices of
that order, and device ``rank`` takes batches ``rank, rank + W, ...``, as
Hugging Face's trainer (accelerate) shards LLaVA's sampler; the order is padded
by wrapping around so every device gets the same number of full batches.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from alignkit.registry import DATA_SAMPLERS
from alignkit.utils.validate import check_int


def _even_chunks(indices: np.ndarray, lengths: np.ndarray, num_chunks: int) -> list[int]:
    """Deal ``indices`` (longest first) into ``num_chunks`` equal-size chunks of near-equal total length."""
    if len(indices) % num_chunks:
        # Unequal sizes cannot be balanced by count: round-robin (LLaVA does the same).
        return [int(i) for c in range(num_chunks) for i in indices[c::num_chunks]]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for i in indices.tolist():
        c = totals.index(min(totals))  # the lightest chunk that still has room
        chunks[c].append(i)
        totals[c] += float(lengths[i])
        if len(chunks[c]) == per_chunk:
            totals[c] = math.inf
    return [i for chunk in chunks for i in chunk]


def _grouped(lengths: np.ndarray, batch_size: int, num_chunks: int, generator: torch.Generator) -> np.ndarray:
    """Positions into ``lengths`` (all > 0): shuffled, then sorted by length within each megabatch."""
    n, mega = len(lengths), batch_size * num_chunks
    perm = torch.randperm(n, generator=generator).numpy()
    megabatch = np.arange(n) // mega
    order = perm[np.lexsort((-lengths[perm], megabatch))]  # stable: ties keep the shuffled order
    if num_chunks == 1:
        return order
    return np.array(
        [i for s in range(0, n, mega) for i in _even_chunks(order[s : s + mega], lengths, num_chunks)], dtype=np.int64
    )


def length_grouped_indices(
    modality_lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    num_chunks: int = 1,
    generator: torch.Generator | None = None,
    group_by_modality: bool = True,
) -> np.ndarray:
    """One epoch's order of all indices (module docstring), each exactly once.

    Args:
        modality_lengths: Int[N] lengths, negative for text-only samples, never 0.
        batch_size: samples per device batch.
        num_chunks: device batches per megabatch (devices × accumulation steps).
        generator: the randomness (a fresh default one if ``None``).
        group_by_modality: keep the modalities apart; with ``False`` (or a single
            modality) only lengths are grouped.
    """
    lengths = np.asarray(modality_lengths, dtype=np.int64)
    if lengths.ndim != 1:
        raise ValueError(f"modality_lengths must be 1-D, got shape {lengths.shape}")
    if (lengths == 0).any():
        raise ValueError(
            f"modality_lengths must be non-zero (sign = modality), got 0 at {int(np.flatnonzero(lengths == 0)[0])}"
        )
    check_int("batch_size", batch_size, low=1)
    check_int("num_chunks", num_chunks, low=1)
    generator = generator if generator is not None else torch.Generator()
    mm, lang = np.flatnonzero(lengths > 0), np.flatnonzero(lengths < 0)
    if not group_by_modality or not len(mm) or not len(lang):
        return _grouped(np.abs(lengths), batch_size, num_chunks, generator)

    mega = batch_size * num_chunks
    parts = []
    for idx in (mm, lang):
        order = idx[_grouped(np.abs(lengths[idx]), batch_size, num_chunks, generator)]
        parts.append([order[s : s + mega] for s in range(0, len(order), mega)])
    leftover = np.concatenate([parts[0][-1], parts[1][-1]])
    full = parts[0][:-1] + parts[1][:-1]
    full = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    if len(leftover) >= mega:
        full.insert(0, leftover[:mega])
        leftover = leftover[mega:]
    if len(leftover):
        full.append(leftover)
    return np.concatenate(full)


def _modality_lengths(dataset) -> np.ndarray:
    if hasattr(dataset, "modality_lengths"):
        return np.asarray(dataset.modality_lengths)
    if hasattr(dataset, "datasets"):  # mmengine's ConcatDataset
        return np.concatenate([_modality_lengths(d) for d in dataset.datasets])
    raise ValueError(f"LengthGroupedSampler needs a dataset with modality_lengths, got {type(dataset).__name__}")


@DATA_SAMPLERS.register_module()
class LengthGroupedSampler(Sampler):
    """LLaVA's modality/length-grouped order, sharded over devices (module docstring).

    Args:
        dataset: a dataset with ``modality_lengths`` (``LLaVADataset``, or a
            ``ConcatDataset`` of them).
        batch_size: the per-device batch size (the dataloader's ``batch_size``).
        group_by_modality: keep image and text-only samples in separate batches.
        accumulative_counts: gradient-accumulation steps (megabatches span them, as in LLaVA).
        seed: the shuffling seed, the same on every device (default: a synced random seed).
        num_replicas, rank: the device count and this device (default: from torch.distributed).

    Call ``set_epoch`` before each epoch (mmengine's loops do) for a new order.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        group_by_modality: bool = True,
        accumulative_counts: int = 1,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        dist_rank, dist_world = get_dist_info()
        self.rank = dist_rank if rank is None else rank
        self.num_replicas = dist_world if num_replicas is None else num_replicas
        check_int("num_replicas", self.num_replicas, low=1)
        check_int("rank", self.rank, low=0, high=self.num_replicas - 1)
        check_int("batch_size", batch_size, low=1)
        check_int("accumulative_counts", accumulative_counts, low=1)
        self.dataset = dataset
        self.batch_size = batch_size
        self.group_by_modality = group_by_modality
        self.accumulative_counts = accumulative_counts
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch = 0
        self.lengths = _modality_lengths(dataset)
        n, per_round = len(self.lengths), self.num_replicas * batch_size
        self.total_size = n if self.num_replicas == 1 else math.ceil(n / per_round) * per_round
        self.num_samples = self.total_size // self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = length_grouped_indices(
            self.lengths,
            self.batch_size,
            self.num_replicas * self.accumulative_counts,
            generator,
            self.group_by_modality,
        )
        if self.num_replicas > 1:
            # Wrap around to whole rounds of W batches, then take every W-th batch.
            order = np.resize(order, self.total_size).reshape(-1, self.batch_size)[self.rank :: self.num_replicas]
        return iter(order.reshape(-1).tolist())

    def __len__(self) -> int:
        return self.num_samples
