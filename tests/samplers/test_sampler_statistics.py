"""Statistical tests: the samplers draw with the probabilities the paper states.

Each test replicates one small situation across T independent groups in a
single call (T images, or T words), counts how often every candidate wins and
compares with its probability p. The count of a candidate is Binomial(T, p),
so its frequency has standard deviation sqrt(p (1 - p) / T); every check
allows 5 of those (a two-sided miss has probability ~6e-7 per candidate for a
correct sampler). Seeds are fixed, so the outcome is deterministic.
"""
import math

import torch

from alignkit.registry import SAMPLERS
from alignkit.structures import PairSet, PatchLabels

T = 20_000
SIGMAS = 5.0


def assert_frequencies(counts: torch.Tensor, probs: list[float], trials: int) -> None:
    freq = counts.double() / trials
    for i, p in enumerate(probs):
        tol = SIGMAS * math.sqrt(p * (1 - p) / trials)
        assert abs(freq[i].item() - p) <= tol, f"candidate {i}: frequency {freq[i]:.4f}, expected {p:.4f} ± {tol:.4f}"


def test_similarity_weighted_follows_eq7():
    # One patch with K = 7 slots: five positive labels (unnormalised scores), one
    # score of exactly 0 and one negative (never labels), replicated over T images.
    scores = torch.tensor([3.0, 1.5, 1.0, 0.4, 0.1, 0.0, -0.2])
    words = torch.arange(7)
    labels = PatchLabels(words.expand(T, 1, 7).clone(), scores.expand(T, 1, 7).clone(), (1, 1))
    out = SAMPLERS.build(dict(type="SimilarityWeightedSampler"))(
        PairSet.from_labels(labels), (1, 1), torch.Generator().manual_seed(1234)
    )
    assert len(out) == T  # one label per image (= per patch)
    counts = torch.bincount(out.word, minlength=7)
    # Eq. 7: p_i = s_i / sum(s) over the positive scores; sum = 6.0
    positive = [3.0, 1.5, 1.0, 0.4, 0.1]
    probs = [s / sum(positive) for s in positive]
    assert_frequencies(counts[:5], probs, T)
    assert counts[5] == 0 and counts[6] == 0


def test_similarity_weighted_in_float64_and_tiny_scores():
    # Weights far from 1 (1e-6 scale) and float64 scores: only ratios matter.
    scores = torch.tensor([2e-6, 1e-6, 1e-6], dtype=torch.float64)
    labels = PatchLabels(torch.arange(3).expand(T, 1, 3).clone(), scores.expand(T, 1, 3).clone(), (1, 1))
    out = SAMPLERS.build(dict(type="SimilarityWeightedSampler"))(
        PairSet.from_labels(labels), (1, 1), torch.Generator().manual_seed(7)
    )
    assert out.score.dtype == torch.float64
    assert_frequencies(torch.bincount(out.word, minlength=3), [0.5, 0.25, 0.25], T)


def test_window_pick_is_uniform_and_ignores_scores():
    # 3x3 grid, k = 2: windows {0,1,3,4} (full), {2,5} and {6,7} (partial, 1x2 / 2x1)
    # and {8} (1x1). One pair per patch with very unequal scores; T images.
    h = w = 3
    scores = torch.tensor([0.9, 0.01, 0.5, 0.1, 0.3, 0.02, 0.7, 0.05, 0.2])
    pairs = PairSet(
        batch=torch.arange(T).repeat_interleave(9),
        patch=torch.arange(9).repeat(T),
        word=torch.arange(9).repeat(T),
        score=scores.repeat(T),
    )
    out = SAMPLERS.build(dict(type="WindowSampler", window=2))(pairs, (h, w), torch.Generator().manual_seed(99))
    assert len(out) == 4 * T
    counts = torch.bincount(out.patch, minlength=9)
    assert_frequencies(counts[[0, 1, 3, 4]], [1 / 4] * 4, T)
    assert_frequencies(counts[[2, 5]], [1 / 2] * 2, T)
    assert_frequencies(counts[[6, 7]], [1 / 2] * 2, T)
    assert counts[8] == T


def test_window_pick_is_uniform_over_pairs_when_a_patch_brings_several():
    # 1x2 grid, k = 2, one window: patch 0 brings 3 pairs, patch 1 brings 1 pair.
    # Uniform over the 4 pairs: each pair 1/4, so patch 0 wins 3/4 of the time.
    per_image = 4
    pairs = PairSet(
        batch=torch.arange(T).repeat_interleave(per_image),
        patch=torch.tensor([0, 0, 0, 1]).repeat(T),
        word=torch.tensor([10, 11, 12, 13]).repeat(T),
        score=torch.tensor([0.9, 0.5, 0.1, 0.3]).repeat(T),
    )
    out = SAMPLERS.build(dict(type="WindowSampler", window=2))(pairs, (1, 2), torch.Generator().manual_seed(5))
    assert len(out) == T
    assert_frequencies(torch.bincount(out.word - 10, minlength=4), [1 / 4] * 4, T)


def test_dedup_pick_is_uniform():
    # T words, each shared by the same patch of 3 images (with unequal scores):
    # the image that keeps each word is uniform over the 3.
    members = 3
    pairs = PairSet(
        batch=torch.arange(members).repeat(T),
        patch=torch.zeros(members * T, dtype=torch.long),
        word=torch.arange(T).repeat_interleave(members),
        score=torch.tensor([0.8, 0.1, 0.05]).repeat(T),
    )
    out = SAMPLERS.build(dict(type="DedupSampler"))(pairs, (1, 1), torch.Generator().manual_seed(11))
    assert len(out) == T
    assert_frequencies(torch.bincount(out.batch, minlength=members), [1 / members] * members, T)


def test_different_generators_differ():
    # 256 patches with 5 positive labels each, scores in [0.1, 1.1): a label's Eq. 7
    # probability is at most 1.1 / (1.1 + 4 * 0.1) < 0.74, so two independent draws
    # agree on every patch with probability < 0.74**256 ~ 1e-33.
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(1, 256, 5, generator=g).sort(dim=-1, descending=True).values + 0.1
    words = torch.randint(0, 1000, (1, 256, 5), generator=g)
    pairs = PairSet.from_labels(PatchLabels(words, scores, (16, 16)))
    sampler = SAMPLERS.build(dict(type="SimilarityWeightedSampler"))
    a = sampler(pairs, (16, 16), torch.Generator().manual_seed(1))
    b = sampler(pairs, (16, 16), torch.Generator().manual_seed(2))
    assert len(a) == len(b) == 256
    assert not torch.equal(a.word, b.word)
