"""The group-by-key primitive (alignkit.samplers.functional) against plain-Python references."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from alignkit.samplers.functional import combine_keys, group_argmax, keep_one_per_group


def reference_group_argmax(key: list[int], priority: list[float]) -> list[int]:
    """Slow reference: per group, the first index of the largest priority."""
    best: dict[int, int] = {}
    for i, (k, p) in enumerate(zip(key, priority)):
        if k not in best or p > priority[best[k]]:
            best[k] = i
    return sorted(best.values())


@given(
    m=st.integers(0, 200),
    num_keys=st.integers(1, 40),
    levels=st.integers(1, 5),
    sparse=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_group_argmax_equals_reference_with_ties(m, num_keys, levels, sparse, seed):
    g = torch.Generator().manual_seed(seed)
    key = torch.randint(0, num_keys, (m,), generator=g)
    if sparse:
        key = key * 10**12  # far past 4*M: exercises the torch.unique compaction path
    # Few priority levels, so exact ties are common and the tie-break is tested.
    priority = torch.randint(0, levels, (m,), generator=g).double()
    got = group_argmax(key, priority)
    assert got.tolist() == reference_group_argmax(key.tolist(), priority.tolist())


def test_group_argmax_handles_infinite_priorities():
    key = torch.tensor([0, 0, 1, 1, 2])
    priority = torch.tensor([float("-inf"), float("-inf"), 1.0, float("inf"), float("-inf")], dtype=torch.float64)
    # group 0: all -inf, tie -> first (0); group 1: +inf wins (3); group 2: the only member (4)
    assert group_argmax(key, priority).tolist() == [0, 3, 4]


@given(m=st.integers(0, 300), num_keys=st.integers(1, 50), weighted=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_keep_one_per_group_keeps_exactly_one_per_key_in_order(m, num_keys, weighted, seed):
    g = torch.Generator().manual_seed(seed)
    key = torch.randint(0, num_keys, (m,), generator=g)
    weight = torch.rand(m, generator=g) + 1e-3 if weighted else None
    kept = keep_one_per_group(key, weight, torch.Generator().manual_seed(seed))
    assert kept.dtype == torch.long
    assert kept.tolist() == sorted(set(kept.tolist())), "indices not unique and ascending"
    kept_keys = key[kept].tolist()
    assert len(kept_keys) == len(set(kept_keys))
    assert set(kept_keys) == set(key.tolist())
    again = keep_one_per_group(key, weight, torch.Generator().manual_seed(seed))
    assert torch.equal(kept, again)


@given(m=st.integers(0, 300), num_keys=st.integers(1, 50), weighted=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_keep_one_per_group_never_keeps_an_ineligible_member(m, num_keys, weighted, seed):
    g = torch.Generator().manual_seed(seed)
    key = torch.randint(0, num_keys, (m,), generator=g)
    eligible = torch.rand(m, generator=g) < 0.5
    weight = None
    if weighted:
        # anything at all where ineligible (0, negative, NaN, inf): it must not matter
        junk = torch.tensor([0.0, -1.0, float("nan"), float("inf")])[torch.randint(0, 4, (m,), generator=g)]
        weight = torch.where(eligible, torch.rand(m, generator=g) + 1e-3, junk)
    kept = keep_one_per_group(key, weight, torch.Generator().manual_seed(seed), eligible=eligible)
    assert bool(eligible[kept].all())
    kept_keys = key[kept].tolist()
    assert len(kept_keys) == len(set(kept_keys))
    assert set(kept_keys) == set(key[eligible].tolist()), "a group with an eligible member kept nothing"
    assert kept.tolist() == sorted(kept.tolist())


def test_keep_one_per_group_default_generator():
    key = torch.tensor([3, 3, 1, 0, 1])
    kept = keep_one_per_group(key)  # torch's default generator
    assert sorted(key[kept].tolist()) == [0, 1, 3]


def test_keep_one_per_group_different_generators_differ():
    # 500 groups of 4 equally likely members: two independent draws agree on
    # every group with probability 4**-500, so "differ" is certain in practice.
    key = torch.arange(500).repeat_interleave(4)
    a = keep_one_per_group(key, None, torch.Generator().manual_seed(1))
    b = keep_one_per_group(key, None, torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_keep_one_per_group_rejects_non_positive_or_non_finite_weights(bad):
    key = torch.tensor([0, 0, 1])
    weight = torch.tensor([0.5, bad, 1.0])
    with pytest.raises(ValueError, match=rf"weight must be positive and finite where eligible, got a weight of {bad}"):
        keep_one_per_group(key, weight)


def test_keep_one_per_group_rejects_bad_shapes_and_keys():
    with pytest.raises(ValueError, match=r"weight shape \(2,\) != key shape \(3,\)"):
        keep_one_per_group(torch.zeros(3, dtype=torch.long), torch.ones(2))
    with pytest.raises(ValueError, match=r"eligible must be a bool tensor shaped like key \(3,\), got torch.int64 \(3,\)"):
        keep_one_per_group(torch.zeros(3, dtype=torch.long), eligible=torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"key has negative value -2"):
        keep_one_per_group(torch.tensor([0, -2, 1]))
    with pytest.raises(ValueError, match=r"key must be an integer tensor"):
        group_argmax(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]))


def test_group_argmax_rejects_nan_priorities():
    with pytest.raises(ValueError, match=r"priority contains NaN"):
        group_argmax(torch.tensor([0, 0, 1]), torch.tensor([0.5, float("nan"), 1.0]))
    # both infinities (a NaN sum) but no NaN: fine
    key, prio = torch.tensor([0, 0, 1]), torch.tensor([float("inf"), float("-inf"), 1.0])
    assert group_argmax(key, prio).tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"priority must be a float tensor, got torch.int64"):
        group_argmax(key, torch.tensor([1, 2, 3]))


def test_empty_key_gives_empty_index():
    out = keep_one_per_group(torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert out.shape == (0,) and out.dtype == torch.long


def test_combine_keys_is_injective_and_guards_overflow():
    major = torch.tensor([0, 0, 1, 2])
    minor = torch.tensor([0, 5, 0, 5])
    # major * 6 + minor: (0,0)->0, (0,5)->5, (1,0)->6, (2,5)->17
    assert combine_keys(major, minor, 6).tolist() == [0, 5, 6, 17]
    with pytest.raises(ValueError, match=r"overflows int64: major id 4611686018427387904 \* minor_size 2"):
        combine_keys(torch.tensor([2**62]), torch.tensor([0]), 2)
    # The largest major that still fits: (2**62 - 1) * 2 + 1 == 2**63 - 1
    assert combine_keys(torch.tensor([2**62 - 1]), torch.tensor([1]), 2).tolist() == [2**63 - 1]
    with pytest.raises(ValueError, match=r"minor_size must be a positive int, got 0"):
        combine_keys(major, minor, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_keep_one_per_group_on_cuda():
    g = torch.Generator().manual_seed(0)
    key = torch.randint(0, 1000, (20000,), generator=g)
    weight = torch.rand(20000, generator=g) + 1e-3
    for w in (None, weight):
        cpu = keep_one_per_group(key, w, torch.Generator().manual_seed(3))
        # a CPU generator with CUDA keys: the same random numbers, so the same picks
        # (uniform: priorities are bit-identical; weighted: log/div on CUDA may differ
        # by an ulp, so only the structure is compared there)
        on_cuda = keep_one_per_group(key.cuda(), None if w is None else w.cuda(), torch.Generator().manual_seed(3))
        assert on_cuda.device.type == "cuda"
        assert set(key[on_cuda.cpu()].tolist()) == set(key.tolist())
        assert len(on_cuda) == len(set(key.tolist()))
        if w is None:
            assert torch.equal(cpu, on_cuda.cpu())
        # a CUDA generator: reproducible with the same seed
        a = keep_one_per_group(key.cuda(), None if w is None else w.cuda(), torch.Generator("cuda").manual_seed(5))
        b = keep_one_per_group(key.cuda(), None if w is None else w.cuda(), torch.Generator("cuda").manual_seed(5))
        assert torch.equal(a, b)
        assert set(key[a.cpu()].tolist()) == set(key.tolist())
