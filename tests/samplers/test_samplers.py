"""The SEA samplers: the one contract every registered sampler keeps, bad input, empty input, and agreement
with a slow per-group reference."""
import random
import re

import pytest
import torch

from alignkit.registry import SAMPLERS
from alignkit.samplers import BaseSampler, Compose, WindowSampler
from alignkit.structures import PairSet, PatchLabels

SEA_PIPELINE = [
    dict(type="SimilarityWeightedSampler"),
    dict(type="WindowSampler", window=2),
    dict(type="DedupSampler"),
]

SAMPLERS.import_from_location()
ALL_CONFIGS = [dict(type=name) for name in sorted(SAMPLERS.module_dict)]


def labels_with_gaps(seed=0, b=3, h=5, w=5, k=4, num_words=12) -> PatchLabels:
    """Trailing empty slots, some scores <= 0, scores sorted descending."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(0, num_words, (b, h * w, k), generator=g)
    scores = torch.rand(b, h * w, k, generator=g) - 0.3
    scores, order = scores.sort(dim=-1, descending=True)
    words = words.gather(-1, order)
    empty = torch.arange(k) >= torch.randint(0, k + 1, (b, h * w, 1), generator=g)
    return PatchLabels(words.masked_fill(empty, -1), scores.masked_fill(empty, 0.0), (h, w))


# --- registry and the common contract ------------------------------------------


def test_every_sea_sampler_is_registered():
    assert {"SimilarityWeightedSampler", "WindowSampler", "DedupSampler", "Compose"} <= set(SAMPLERS.module_dict)
    assert len(ALL_CONFIGS) >= 4


@pytest.mark.parametrize("cfg", ALL_CONFIGS, ids=lambda c: c["type"])
def test_registered_sampler_contract(cfg):
    sampler = SAMPLERS.build(cfg)
    assert isinstance(sampler, BaseSampler)
    labels = labels_with_gaps()
    pairs = PairSet.from_labels(labels)
    out = sampler(pairs, labels.grid, torch.Generator().manual_seed(0))
    assert isinstance(out, PairSet)
    assert 0 < len(out) <= len(pairs)
    assert bool((out.score > 0).all())
    in_rows = set(zip(pairs.batch.tolist(), pairs.patch.tolist(), pairs.word.tolist(), pairs.score.double().tolist()))
    out_rows = list(zip(out.batch.tolist(), out.patch.tolist(), out.word.tolist(), out.score.double().tolist()))
    assert set(out_rows) <= in_rows and len(set(out_rows)) == len(out_rows)  # a subset, no row twice
    # empty in, empty out, no error; dtype kept
    for empty in (PairSet.empty(), PairSet.empty(score_dtype=torch.float64)):
        res = sampler(empty, (2, 3), torch.Generator().manual_seed(0))
        assert len(res) == 0 and res.score.dtype == empty.score.dtype
    # input untouched
    again = PairSet.from_labels(labels)
    for name in ("batch", "patch", "word", "score"):
        assert torch.equal(getattr(pairs, name), getattr(again, name))


def test_compose_accepts_instances_and_dicts():
    sampler = SAMPLERS.build(dict(type="Compose", samplers=[dict(type="SimilarityWeightedSampler"), WindowSampler(3)]))
    assert [type(s).__name__ for s in sampler.samplers] == ["SimilarityWeightedSampler", "WindowSampler"]
    assert sampler.samplers[1].window == 3
    assert repr(sampler) == "Compose([SimilarityWeightedSampler(), WindowSampler(window=3)])"


def test_compose_of_nothing_only_drops_non_positive_scores():
    pairs = PairSet(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), torch.tensor([4, 4, 4]), torch.tensor([0.5, 0.0, -1.0]))
    out = Compose([])(pairs, (1, 2))
    assert out.word.tolist() == [4] and out.score.tolist() == [0.5]


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("window", [0, -1, 1.5, "2", True, None])
def test_window_must_be_a_positive_int(window):
    with pytest.raises(ValueError, match=rf"window must be an int >= 1, got {window!r}"):
        SAMPLERS.build(dict(type="WindowSampler", window=window))


@pytest.mark.parametrize("cfg", SEA_PIPELINE + [dict(type="Compose", samplers=SEA_PIPELINE)], ids=lambda c: c["type"])
def test_bad_pairs_raise_naming_the_field_and_value(cfg):
    sampler = SAMPLERS.build(cfg)
    good = PairSet.from_labels(labels_with_gaps(h=4, w=4))

    nan = PairSet(good.batch, good.patch, good.word, good.score.clone())
    nan.score[3] = float("nan")
    with pytest.raises(ValueError, match=r"pairs\.score must be finite, got nan at pair 3"):
        sampler(nan, (4, 4))

    inf = PairSet(good.batch, good.patch, good.word, good.score.clone())
    inf.score[0] = float("inf")
    with pytest.raises(ValueError, match=r"pairs\.score must be finite, got inf at pair 0"):
        sampler(inf, (4, 4))

    past = PairSet(good.batch, good.patch.clone(), good.word, good.score)
    past.patch[1] = 16
    with pytest.raises(ValueError, match=r"pairs\.patch has id 16, but grid \(4, 4\) holds patches 0\.\.15"):
        sampler(past, (4, 4))

    # labels made on a 4x4 grid, passed with a 3x3 one: patches past 8 are caught
    top = int(good.patch.max())
    with pytest.raises(ValueError, match=rf"pairs\.patch has id {top}, but grid \(3, 3\) holds patches 0\.\.8"):
        sampler(good, (3, 3))

    neg_word = PairSet(good.batch, good.patch, good.word.clone(), good.score)
    neg_word.word[0] = -1
    with pytest.raises(ValueError, match=r"pairs\.word has id -1"):
        sampler(neg_word, (4, 4))

    neg_batch = PairSet(good.batch.clone(), good.patch, good.word, good.score)
    neg_batch.batch[2] = -5
    with pytest.raises(ValueError, match=r"pairs\.batch has negative id -5"):
        sampler(neg_batch, (4, 4))


@pytest.mark.parametrize("grid", [(0, 3), (3, -1), (2,), (2, 2, 2), (2.5, 2), "ab", None, (True, 2)])
def test_bad_grid_raises(grid):
    sampler = SAMPLERS.build(dict(type="SimilarityWeightedSampler"))
    with pytest.raises(ValueError, match=r"grid must be a pair \(H, W\) of positive ints, got " + re.escape(repr(grid))):
        sampler(PairSet.empty(), grid)


def test_grid_accepts_lists_and_torch_sizes():
    pairs = PairSet.from_labels(labels_with_gaps(h=2, w=3))
    sampler = SAMPLERS.build(dict(type="WindowSampler", window=2))
    a = sampler(pairs, [2, 3], torch.Generator().manual_seed(0))
    b = sampler(pairs, torch.Size([2, 3]), torch.Generator().manual_seed(0))
    assert torch.equal(a.patch, b.patch)


def test_compose_rejects_what_is_not_a_sampler():
    with pytest.raises(ValueError, match=r"samplers\[1\] must be a BaseSampler or a config dict, got str"):
        Compose([dict(type="DedupSampler"), "WindowSampler"])
    with pytest.raises(ValueError, match=r"samplers must be a list of samplers or config dicts, got dict"):
        Compose(dict(type="DedupSampler"))


def test_pairs_must_be_a_pairset():
    with pytest.raises(ValueError, match=r"pairs must be a PairSet, got dict"):
        SAMPLERS.build(dict(type="DedupSampler"))({"word": torch.zeros(1)}, (1, 1))


# --- partial windows ------------------------------------------------------------


def test_siglip_grid_partial_windows_are_kept():
    # 27x27 with k=2: ceil(27/2)**2 = 14*14 = 196 windows per image, of which the
    # last row and column are partial (13*1 + 1*13 two-patch windows, one 1x1).
    h = w = 27
    b = 2
    pairs = PairSet(
        batch=torch.arange(b).repeat_interleave(h * w),
        patch=torch.arange(h * w).repeat(b),
        word=torch.arange(b * h * w),
        score=torch.full((b * h * w,), 0.5),
    )
    out = SAMPLERS.build(dict(type="WindowSampler", window=2))(pairs, (h, w), torch.Generator().manual_seed(0))
    assert len(out) == b * 196
    # the 1x1 corner window (patch 728) has a single candidate, so it is always kept
    assert ((out.patch == 27 * 27 - 1).sum()) == b
    windows = {(bb, (p // w) // 2, (p % w) // 2) for bb, p in zip(out.batch.tolist(), out.patch.tolist())}
    assert windows == {(bb, r, c) for bb in range(b) for r in range(14) for c in range(14)}


# --- agreement with a slow per-group reference ------------------------------------


def reference_stage(rows: list[tuple], group_of, weighted: bool, rng: random.Random) -> list[tuple]:
    """One sampler written the straightforward way: a Python dict of groups, one pick per group."""
    groups: dict = {}
    for row in rows:
        if row[3] > 0:
            groups.setdefault(group_of(row), []).append(row)
    picked = []
    for members in groups.values():
        weights = [m[3] for m in members] if weighted else None
        picked.append(rng.choices(members, weights=weights)[0])
    return picked


def as_rows(pairs: PairSet) -> list[tuple]:
    return list(zip(pairs.batch.tolist(), pairs.patch.tolist(), pairs.word.tolist(), pairs.score.double().tolist()))


@pytest.mark.parametrize("seed,window,grid", [(0, 2, (5, 5)), (1, 2, (6, 4)), (2, 3, (7, 7)), (3, 1, (3, 5))])
def test_structure_agrees_with_slow_reference(seed, window, grid):
    h, w = grid
    labels = labels_with_gaps(seed=seed, b=4, h=h, w=w, k=5, num_words=40)
    pairs = PairSet.from_labels(labels)
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)

    def patch_of(r):
        return r[0], r[1]

    def window_of(r):
        return r[0], (r[1] // w) // window, (r[1] % w) // window

    def word_of(r):
        return r[2]

    # Stage by stage, on the same input as the vectorised sampler: which groups
    # survive does not depend on the draw, so those sets must be equal.
    stages = [
        (dict(type="SimilarityWeightedSampler"), patch_of, True),
        (dict(type="WindowSampler", window=window), window_of, False),
        (dict(type="DedupSampler"), word_of, False),
    ]
    for cfg, group_of, weighted in stages:
        out = SAMPLERS.build(cfg)(pairs, grid, g)
        ref = reference_stage(as_rows(pairs), group_of, weighted, rng)
        got_groups = [group_of(r) for r in as_rows(out)]
        assert len(got_groups) == len(set(got_groups)), cfg
        assert set(got_groups) == {group_of(r) for r in ref}, cfg
        pairs = out


# --- CUDA -------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_samplers_on_cuda():
    labels = labels_with_gaps(seed=5, b=6, h=7, w=7, k=5, num_words=30)
    pairs = PairSet.from_labels(labels)
    grid = labels.grid
    cuda_pairs = pairs.to("cuda")
    chain = SAMPLERS.build(dict(type="Compose", samplers=SEA_PIPELINE))
    a = chain(cuda_pairs, grid, torch.Generator(device="cuda").manual_seed(0))
    b = chain(cuda_pairs, grid, torch.Generator(device="cuda").manual_seed(0))
    assert a.batch.device.type == "cuda"
    assert as_rows(a) == as_rows(b)
    assert bool((a.score > 0).all())
    assert set(as_rows(a)) <= set(as_rows(pairs))
    words = a.word.tolist()
    assert len(words) == len(set(words))
    # The uniform samplers draw bit-identical priorities from a CPU generator
    # whatever the pairs' device, so CPU and CUDA pick the same pairs.
    for cfg in (dict(type="WindowSampler", window=2), dict(type="DedupSampler")):
        sampler = SAMPLERS.build(cfg)
        on_cpu = sampler(pairs, grid, torch.Generator().manual_seed(1))
        on_cuda = sampler(cuda_pairs, grid, torch.Generator().manual_seed(1))
        assert as_rows(on_cpu) == as_rows(on_cuda.to("cpu"))
    # bad input is caught on CUDA too
    bad = PairSet(cuda_pairs.batch, cuda_pairs.patch, cuda_pairs.word, cuda_pairs.score.clone())
    bad.score[0] = float("nan")
    with pytest.raises(ValueError, match=r"pairs\.score must be finite, got nan at pair 0"):
        chain(bad, grid)
