"""Property tests of the SEA samplers: invariants on random PatchLabels of random sizes.

Every sampler is built from a config dict through ``SAMPLERS``. Expected sets
(which patches / windows / words must keep a pair) are computed here in plain
Python from the input rows, independently of the samplers' key code.
"""
from collections import Counter

import torch
from hypothesis import given
from hypothesis import strategies as st

from alignkit.registry import SAMPLERS
from alignkit.structures import PairSet, PatchLabels

SEA_PIPELINE = [
    dict(type="SimilarityWeightedSampler"),
    dict(type="WindowSampler", window=2),
    dict(type="DedupSampler"),
]


def random_labels(seed, b, h, w, k, num_words, dtype=torch.float32) -> PatchLabels:
    """PatchLabels with trailing empty slots (some patches fully empty) and some scores <= 0."""
    g = torch.Generator().manual_seed(seed)
    p = h * w
    words = torch.randint(0, num_words, (b, p, k), generator=g)
    scores = torch.rand(b, p, k, generator=g, dtype=torch.float64)
    kind = torch.randint(0, 5, (b, p, k), generator=g)  # 0: exactly 0, 1: negative, else positive
    scores = torch.where(kind == 0, torch.zeros_like(scores), torch.where(kind == 1, -scores, scores))
    scores, order = scores.sort(dim=-1, descending=True)
    words = words.gather(-1, order)
    filled = torch.randint(0, k + 1, (b, p, 1), generator=g)  # 0..K non-empty slots per patch
    empty = torch.arange(k) >= filled
    words = words.masked_fill(empty, -1)
    scores = scores.masked_fill(empty, 0.0)
    return PatchLabels(words, scores.to(dtype), (h, w))


def rows(pairs: PairSet) -> list[tuple]:
    """Every pair as an exact Python tuple (float64 score)."""
    return list(
        zip(
            pairs.batch.tolist(),
            pairs.patch.tolist(),
            pairs.word.tolist(),
            pairs.score.double().tolist(),
        )
    )


def assert_subset(out: PairSet, inp: PairSet) -> None:
    assert out.score.dtype == inp.score.dtype
    out_rows, in_rows = Counter(rows(out)), Counter(rows(inp))
    for row, n in out_rows.items():
        assert in_rows[row] >= n, f"output row {row} is not (or not that often) an input row"
    # input order is kept: the output is a subsequence of the input
    it = iter(rows(inp))
    assert all(any(r == x for x in it) for r in rows(out)), "output is not in input order"


def assert_positive(out: PairSet) -> None:
    assert bool((out.score.double() > 0).all()), f"scores <= 0 came out: {out.score[out.score <= 0]}"


sizes = dict(
    b=st.integers(1, 4),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    k=st.integers(1, 5),
    num_words=st.integers(1, 30),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)


@given(**sizes)
def test_similarity_weighted_keeps_one_pair_per_labelled_patch(b, h, w, k, num_words, seed, dtype):
    pairs = PairSet.from_labels(random_labels(seed, b, h, w, k, num_words, dtype))
    out = SAMPLERS.build(dict(type="SimilarityWeightedSampler"))(pairs, (h, w), torch.Generator().manual_seed(seed))
    assert_subset(out, pairs)
    assert_positive(out)
    kept = [(bb, pp) for bb, pp, _, _ in rows(out)]
    assert len(kept) == len(set(kept)), "two pairs kept for one patch"
    expected = {(bb, pp) for bb, pp, _, s in rows(pairs) if s > 0}
    assert set(kept) == expected


@given(window=st.integers(1, 4), **sizes)
def test_window_keeps_one_pair_per_window_partial_windows_included(window, b, h, w, k, num_words, seed, dtype):
    pairs = PairSet.from_labels(random_labels(seed, b, h, w, k, num_words, dtype))
    # Straight from the labels, so several pairs per patch reach the window sampler.
    out = SAMPLERS.build(dict(type="WindowSampler", window=window))(pairs, (h, w), torch.Generator().manual_seed(seed))
    assert_subset(out, pairs)
    assert_positive(out)

    def window_of(bb, pp):
        return bb, (pp // w) // window, (pp % w) // window

    kept = [window_of(bb, pp) for bb, pp, _, _ in rows(out)]
    assert len(kept) == len(set(kept)), "two pairs kept in one window"
    assert set(kept) == {window_of(bb, pp) for bb, pp, _, s in rows(pairs) if s > 0}


@given(**sizes)
def test_dedup_keeps_one_pair_per_word(b, h, w, k, num_words, seed, dtype):
    pairs = PairSet.from_labels(random_labels(seed, b, h, w, k, num_words, dtype))
    out = SAMPLERS.build(dict(type="DedupSampler"))(pairs, (h, w), torch.Generator().manual_seed(seed))
    assert_subset(out, pairs)
    assert_positive(out)
    kept = out.word.tolist()
    assert len(kept) == len(set(kept)), "a word kept twice"
    assert set(kept) == {ww for _, _, ww, s in rows(pairs) if s > 0}


@given(window=st.integers(1, 4), **sizes)
def test_compose_is_the_chain_and_keeps_every_invariant(window, b, h, w, k, num_words, seed, dtype):
    pairs = PairSet.from_labels(random_labels(seed, b, h, w, k, num_words, dtype))
    steps = [dict(type="SimilarityWeightedSampler"), dict(type="WindowSampler", window=window), dict(type="DedupSampler")]
    out = SAMPLERS.build(dict(type="Compose", samplers=steps))(pairs, (h, w), torch.Generator().manual_seed(seed))
    assert_subset(out, pairs)
    assert_positive(out)
    patches = [(bb, pp) for bb, pp, _, _ in rows(out)]
    windows = [(bb, (pp // w) // window, (pp % w) // window) for bb, pp in patches]
    words = out.word.tolist()
    assert len(set(patches)) == len(patches)
    assert len(set(windows)) == len(windows)
    assert len(set(words)) == len(words)

    # Compose passes one generator through the stages in order: same as chaining by hand.
    g = torch.Generator().manual_seed(seed)
    chained = pairs
    for cfg in steps:
        chained = SAMPLERS.build(cfg)(chained, (h, w), g)
    assert rows(chained) == rows(out)


@given(window=st.integers(1, 4), **sizes)
def test_same_seed_same_output(window, b, h, w, k, num_words, seed, dtype):
    pairs = PairSet.from_labels(random_labels(seed, b, h, w, k, num_words, dtype))
    for cfg in [
        dict(type="SimilarityWeightedSampler"),
        dict(type="WindowSampler", window=window),
        dict(type="DedupSampler"),
        dict(type="Compose", samplers=SEA_PIPELINE),
    ]:
        sampler = SAMPLERS.build(cfg)
        first = sampler(pairs, (h, w), torch.Generator().manual_seed(seed))
        second = sampler(pairs, (h, w), torch.Generator().manual_seed(seed))
        assert rows(first) == rows(second), cfg


@given(b=st.integers(0, 3), h=st.integers(1, 5), w=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_only_non_positive_or_no_pairs_give_an_empty_output(b, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    k = 3
    words = torch.randint(0, 10, (b, h * w, k), generator=g)
    scores = -torch.rand(b, h * w, k, generator=g)  # all in (-1, 0]
    pairs = PairSet.from_labels(PatchLabels(words, scores, (h, w)))
    for cfg in [dict(type="SimilarityWeightedSampler"), dict(type="WindowSampler"), dict(type="DedupSampler"),
                dict(type="Compose", samplers=SEA_PIPELINE)]:
        out = SAMPLERS.build(cfg)(pairs, (h, w), g)
        assert len(out) == 0
