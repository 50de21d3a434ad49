"""LengthGroupedSampler: every index once per epoch, modality-pure megabatches, sorted, balanced, sharded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from alignkit.datasets import LengthGroupedSampler, length_grouped_indices
from alignkit.registry import DATA_SAMPLERS


def draw_lengths(n: int, text_fraction: float, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 500, (n,), generator=g)
    text = torch.rand(n, generator=g) < text_fraction
    return torch.where(text, -lengths, lengths).numpy()


class FakeLengths:
    """A dataset stand-in carrying only what the sampler reads."""

    def __init__(self, modality_lengths):
        self.modality_lengths = np.asarray(modality_lengths)

    def __len__(self):
        return len(self.modality_lengths)


@given(st.integers(1, 300), st.integers(1, 8), st.integers(1, 4), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_each_index_once_and_megabatches_grouped(n, batch_size, num_chunks, text_fraction, seed):
    lengths = draw_lengths(n, text_fraction, seed)
    order = length_grouped_indices(lengths, batch_size, num_chunks, torch.Generator().manual_seed(seed))
    assert sorted(order.tolist()) == list(range(n))
    mega = batch_size * num_chunks
    blocks = [order[s : s + mega] for s in range(0, n, mega)]
    mixed = [k for k, b in enumerate(blocks) if (lengths[b] > 0).any() and (lengths[b] < 0).any()]
    # Only the merged leftover may mix modalities, and it sits first or last.
    assert len(mixed) <= 1 and set(mixed) <= {0, len(blocks) - 1}
    for k, b in enumerate(blocks):
        if k in mixed or len(b) != mega:
            continue  # the tail of a split leftover is not a whole dealt megabatch
        chunks = np.abs(lengths[b]).reshape(num_chunks, batch_size)
        # Sorted longest first, then dealt greedily: each device batch is sorted, and
        # batch totals differ by at most the longest item of the megabatch.
        assert (np.diff(chunks, axis=1) <= 0).all()
        assert chunks.sum(1).max() - chunks.sum(1).min() <= chunks.max()


def test_group_by_modality_off_sorts_by_length_only():
    lengths = np.array([5, -7, 3, -1, 9, -2, 4, -8])
    order = length_grouped_indices(lengths, 4, 1, torch.Generator().manual_seed(0), group_by_modality=False)
    assert sorted(order.tolist()) == list(range(8))
    for s in (0, 4):
        assert (np.diff(np.abs(lengths[order[s : s + 4]])) <= 0).all()


def test_one_modality_only_is_fine():
    order = length_grouped_indices(np.arange(1, 11), 3, 1, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(10))


def test_sampler_epochs_and_seed():
    ds = FakeLengths(draw_lengths(50, 0.4, seed=3))
    s = DATA_SAMPLERS.build(dict(type="LengthGroupedSampler", dataset=ds, batch_size=4, seed=11))
    first = list(s)
    assert len(s) == 50 and sorted(first) == list(range(50))
    assert list(s) == first  # same epoch, same order
    s.set_epoch(1)
    second = list(s)
    assert sorted(second) == list(range(50)) and second != first
    again = LengthGroupedSampler(ds, batch_size=4, seed=11)
    again.set_epoch(1)
    assert list(again) == second


@pytest.mark.parametrize("world, accum", [(3, 1), (2, 2)])
def test_sharded_over_devices(world, accum):
    n, batch_size = 47, 4
    ds = FakeLengths(draw_lengths(n, 0.4, seed=5))
    shards = [
        list(LengthGroupedSampler(ds, batch_size, accumulative_counts=accum, seed=0, num_replicas=world, rank=r))
        for r in range(world)
    ]
    sizes = {len(x) for x in shards}
    per_round = world * batch_size
    assert sizes == {int(np.ceil(n / per_round)) * batch_size}  # equal, whole batches
    all_indices = [i for x in shards for i in x]
    assert set(all_indices) == set(range(n))
    assert len(all_indices) - n < per_round  # padding by wrap-around only
    # Step k of device r is global batch k * world + r: the steps, reassembled, are
    # modality-pure except the merged leftover.
    steps = [
        sum((x[k * batch_size : (k + 1) * batch_size] for x in shards), []) for k in range(sizes.pop() // batch_size)
    ]
    lengths = ds.modality_lengths
    mixed = [k for k, step in enumerate(steps) if (lengths[step] > 0).any() and (lengths[step] < 0).any()]
    assert len(mixed) <= 2  # the leftover megabatch, and the wrap-around round


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-zero"):
        length_grouped_indices([3, 0, -2], 2)
    with pytest.raises(ValueError, match="batch_size"):
        length_grouped_indices([3, -2], 0)
    with pytest.raises(ValueError, match="rank"):
        LengthGroupedSampler(FakeLengths([1, 2]), 1, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="modality_lengths"):
        LengthGroupedSampler(list(range(4)), 2, seed=0)
