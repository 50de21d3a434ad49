"""Every fast piece of alignkit against its loop-style float64 reference in ``alignkit/reference.py``.

One parametrised test, one case per fast piece. Deterministic pieces must give
the reference's numbers; the samplers draw, so they are compared by what they
may return (every output obeys the reference's rules) and by how often each
candidate pair is kept: both sides draw R times and each pair's frequency must
agree within 5 binomial standard deviations of the difference.
"""
from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

import alignkit.testing.demo  # noqa: F401  (registers the tiny demo ViT config)
from alignkit import reference
from alignkit.labelers import CLIPTopNLabeler
from alignkit.labelers.functional import cosine_topn
from alignkit.losses.functional import info_nce, sigmoid_pairwise
from alignkit.models import SEAAligner
from alignkit.registry import ALIGN_LOSSES, MODELS, SAMPLERS
from alignkit.structures import EMPTY_WORD, PairSet, PatchLabels
from alignkit.testing import BYTE_LEVEL_SPACE, byte_level_bpe_tokenizer, chain_merges, random_embedding
from alignkit.word_table import build_word_table, word_token_ids
from helpers import tiny_batch, tiny_model_cfg

R = 1500  # draws per side for the samplers
WORDS = ["cat", "dog", "tree", "car", "sky", "boat", "house", "road"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _labels_as_lists(labels: PatchLabels) -> reference.Labels:
    return [[[(int(w), float(s)) for w, s in zip(ws, ss) if w != EMPTY_WORD] for ws, ss in zip(wi, si)]
            for wi, si in zip(labels.words.tolist(), labels.scores.tolist())]


def _assert_labels_equal(labels: PatchLabels, expected: reference.Labels) -> None:
    got = _labels_as_lists(labels)
    assert [[[w for w, _ in p] for p in img] for img in got] == [[[w for w, _ in p] for p in img] for img in expected]
    for g_img, e_img in zip(got, expected):
        for g, e in zip(g_img, e_img):
            assert [s for _, s in g] == pytest.approx([s for _, s in e], abs=1e-6)


# --------------------------------------------------------------------------- Eq. 6
def eq6_cosine_topn():
    g = _gen(0)
    dense, bank = torch.randn(2, 6, 5, generator=g), torch.randn(9, 5, generator=g)
    for negate, min_score in ((True, 0.0), (False, 0.0), (True, -0.2), (False, 0.3)):
        scores, ids = cosine_topn(dense, F.normalize(bank, dim=-1), 4, min_score=min_score, negate=negate, chunk_size=5)
        got = PatchLabels(ids, scores, (2, 3))
        _assert_labels_equal(got, reference.patch_labels(dense, bank, 4, min_score=min_score, negate=negate))


def eq6_labeler_label():
    labeler = CLIPTopNLabeler("alignkit-demo-vit", None, word_list=WORDS, top_n=3, device="cpu")
    dense = torch.randn(2, 64, labeler.embed_dim, generator=_gen(1))
    expected = reference.patch_labels(dense, labeler.bank, 3, min_score=labeler.min_score, negate=labeler.negate)
    _assert_labels_equal(labeler.label(dense), expected)


# --------------------------------------------------------------------------- Eq. 7 + window + dedup
GRID = (3, 3)  # not divisible by the 2×2 window: partial edge windows


def _sampler_labels() -> PatchLabels:
    """2 images × 9 patches × top-3 over 5 words: uneven scores, a few <= 0 and empty slots."""
    g = _gen(2)
    words = torch.stack([torch.randperm(5, generator=g)[:3] for _ in range(18)]).reshape(2, 9, 3)
    scores = torch.rand(2, 9, 3, generator=g) ** 3 + 0.01  # weights from ~0.01 to ~1: Eq. 7 matters
    scores[0, 1, 2] = -0.1  # not a label
    scores[1, 4, 1:] = 0.0
    scores, order = scores.sort(dim=-1, descending=True)
    words = words.gather(-1, order)
    words[0, 7, 1:] = EMPTY_WORD
    scores[0, 7, 1:] = 0.0
    words[1, 8] = EMPTY_WORD  # a patch without labels
    scores[1, 8] = 0.0
    return PatchLabels(words, scores, GRID)


def _check_rules(pairs: list[reference.Pair], candidates: set, window: int | None, dedup: bool) -> None:
    """What every output of the chain obeys, whatever the draw."""
    assert set(pairs) <= candidates
    assert all(s > 0 for *_, s in pairs)
    assert len({(b, p) for b, p, _, _ in pairs}) == len(pairs)  # one label per patch
    if window is not None:
        w = GRID[1]
        assert len({(b, (p // w) // window, (p % w) // window) for b, p, _, _ in pairs}) == len(pairs)
    if dedup:
        assert len({word for _, _, word, _ in pairs}) == len(pairs)


def _compare_frequencies(fast_draw, window: int | None, dedup: bool) -> None:
    labels = _sampler_labels()
    lists = _labels_as_lists(labels)
    candidates = {(b, p, w, s) for b, img in enumerate(lists) for p, row in enumerate(img) for w, s in row}
    fast, ref = Counter(), Counter()
    rng = random.Random(0)
    for i in range(R):
        got = fast_draw(labels, _gen(1000 + i))
        _check_rules(got, candidates, window, dedup)
        fast.update(got)
        want = reference.sample_pairs(lists, GRID, rng, window=window, dedup=dedup)
        _check_rules(want, candidates, window, dedup)
        ref.update(want)
    for pair in candidates:
        p_fast, p_ref = fast[pair] / R, ref[pair] / R
        p = (p_fast + p_ref) / 2
        sigma = math.sqrt(max(p * (1 - p), 1 / R) * 2 / R)
        assert abs(p_fast - p_ref) <= 5 * sigma, (pair, p_fast, p_ref)


def _as_tuples(pairs: PairSet) -> list[reference.Pair]:
    return sorted(zip(pairs.batch.tolist(), pairs.patch.tolist(), pairs.word.tolist(), pairs.score.tolist()))


def _chain(*samplers):
    chain = SAMPLERS.build(dict(type="Compose", samplers=list(samplers)))
    return lambda labels, g: _as_tuples(chain(PairSet.from_labels(labels), labels.grid, g))


SW, WIN, DEDUP = dict(type="SimilarityWeightedSampler"), dict(type="WindowSampler", window=2), dict(type="DedupSampler")


def eq7_similarity_weighted():
    _compare_frequencies(_chain(SW), window=None, dedup=False)


def eq7_then_window():
    _compare_frequencies(_chain(SW, WIN), window=2, dedup=False)


def eq7_window_dedup():
    _compare_frequencies(_chain(SW, WIN, DEDUP), window=2, dedup=True)


def eq7_aligner_sample():
    aligner = SEAAligner(samplers=[SW, WIN, DEDUP], words=[f"w{i}" for i in range(5)])
    _compare_frequencies(lambda labels, g: _as_tuples(aligner.sample(labels, g)[0]), window=2, dedup=True)


# --------------------------------------------------------------------------- Eq. 8
def eq8_word_table():
    tokenizer = byte_level_bpe_tokenizer(chain_merges(["cat", "dog", "tree", "car"], BYTE_LEVEL_SPACE))
    embedding = random_embedding(len(tokenizer), 6, seed=3, dtype=torch.float64)
    words = ["cat", "dog", "trees", "carpet", "sky"]
    table = build_word_table(tokenizer, embedding, words, dtype=torch.float64)
    expected = reference.word_table(embedding.weight, word_token_ids(tokenizer, words))
    torch.testing.assert_close(table.table, expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- Eq. 9
def eq9_info_nce():
    for n, chunk in ((1, None), (7, None), (7, 3), (13, "auto")):
        g = _gen(n)
        x, t = torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(n, 5, generator=g, dtype=torch.float64)
        for scale in (1.0, 1 / 0.07):
            assert info_nce(x, t, scale, chunk_size=chunk).item() == pytest.approx(
                reference.info_nce(x, t, scale), rel=1e-12, abs=1e-12)
    loss = ALIGN_LOSSES.build(dict(type="InfoNCELoss", init_logit_scale=0.5)).double()
    g = _gen(4)
    x, t = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    assert loss(x, t).item() == pytest.approx(reference.info_nce(x, t, math.exp(loss.logit_scale.item())), rel=1e-12)


def eq9_sigmoid():
    for n, chunk in ((1, None), (7, None), (7, 3)):
        g = _gen(10 + n)
        x, t = torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(n, 5, generator=g, dtype=torch.float64)
        got = sigmoid_pairwise(x, t, 10.0, -10.0, chunk_size=chunk).item()
        assert got == pytest.approx(reference.sigmoid_loss(x, t, 10.0, -10.0), rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------- Eq. 11
def eq11_objective():
    """``LLaVAModel.parse_losses`` (what the optimiser steps on) is Eq. 11 of the model's two terms."""
    weight = 0.25
    model = MODELS.build(tiny_model_cfg(aligner=True, autocast_dtype=None))
    model.aligner.loss_weight = weight
    batch = model.data_preprocessor(tiny_batch(model), True)
    torch.manual_seed(0)
    losses = model(**batch, mode="loss")
    loss, logged = model.parse_losses(losses)
    model.aligner.loss_weight = 1.0  # the same draw again, unweighted: L_align itself
    torch.manual_seed(0)
    raw = model(**batch, mode="loss")
    assert raw["loss_lm"].item() == losses["loss_lm"].item()
    expected = reference.total_loss(raw["loss_lm"].item(), raw["loss_align"].item(), weight)
    assert loss.item() == pytest.approx(expected, rel=1e-6) and logged["loss"] is loss
    with pytest.raises(ValueError, match="loss_extra"):  # no silent third term
        model.parse_losses(dict(losses, loss_extra=torch.tensor(1.0)))


PIECES = [eq6_cosine_topn, eq6_labeler_label, eq7_similarity_weighted, eq7_then_window, eq7_window_dedup,
          eq7_aligner_sample, eq8_word_table, eq9_info_nce, eq9_sigmoid, eq11_objective]


@pytest.mark.parametrize("piece", PIECES, ids=lambda f: f.__name__)
def test_fast_piece_matches_its_reference(piece):
    piece()
