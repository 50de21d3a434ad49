"""The SEA paper's equations as short, loop-style references in float64: read this file next to the paper.

Each function is the slow, obvious version of one fast piece of alignkit:
plain Python loops over patches, pairs and words, math in float64, no
chunking, no vectorisation. ``tests/test_reference.py`` checks every fast
piece against its reference (exactly where the piece is deterministic,
statistically where it draws).

=========  ===============================================  =================================================
equation   reference here                                   fast piece
=========  ===============================================  =================================================
Eq. 6      :func:`patch_labels` (normalise, negate, top-n,  ``labelers.functional.cosine_topn``,
           drop scores <= min score)                        ``OpenCLIPTopNLabeler.label``
Eq. 7      :func:`sample_pairs` (one label per patch ∝      ``SimilarityWeightedSampler``, ``WindowSampler``,
           score, one patch per k×k window, one pair per    ``DedupSampler`` (``Compose``, ``SEAAligner``)
           word)
Eq. 8      :func:`word_table` (mean input embedding of a    ``word_table.build_word_table``
           word's tokens)
Eq. 9      :func:`info_nce` (symmetric InfoNCE);            ``losses.functional.info_nce`` (``InfoNCELoss``);
           :func:`sigmoid_loss` (SigLIP, the alternative)   ``losses.functional.sigmoid_pairwise``
Eq. 11     :func:`total_loss` (``loss_lm + λ·loss_align``)  ``LLaVAModel`` (``loss_align`` comes × λ from the
                                                            aligner; mmengine adds the two ``loss_`` keys)
=========  ===============================================  =================================================

Conventions: ``dense`` (B, P, C) patch embeddings in the joint image-text
space, ``bank`` (V, C) text embeddings of the word list, labels as nested
lists ``labels[b][p] = [(word, score), ...]`` (best first), pairs as tuples
``(batch, patch, word, score)``. Shape letters as in ``docs/design.md``.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import Tensor

Labels = list[list[list[tuple[int, float]]]]  # labels[b][p] = [(word, score), ...], best first
Pair = tuple[int, int, int, float]  # (batch, patch, word, score)


def _unit(row: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(v * v for v in row))
    return [v / max(norm, 1e-6) for v in row]


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b))


def _logsumexp(values: Sequence[float]) -> float:
    m = max(values)
    return m + math.log(math.fsum(math.exp(v - m) for v in values))


# --------------------------------------------------------------------------- Eq. 6: labels
def patch_labels(dense: Tensor, bank: Tensor, top_n: int, min_score: float = 0.0, negate: bool = True) -> Labels:
    """Eq. 6: the top-n words of every patch by (negated) cosine similarity; scores <= ``min_score`` dropped.

    ``s_ij = -cos(z_i, t_j)`` with ``negate`` (the paper, after CLIP Surgery:
    CLIP's dense tokens point away from their words), ``+cos`` without.
    """
    bank_rows = [_unit(r) for r in bank.double().tolist()]
    out: Labels = []
    for image in dense.double().tolist():
        rows = []
        for patch in image:
            z = _unit(patch)
            sims = [(-1.0 if negate else 1.0) * _dot(z, t) for t in bank_rows]
            best = sorted(range(len(sims)), key=lambda j: -sims[j])[:top_n]
            rows.append([(j, sims[j]) for j in best if sims[j] > min_score])
        out.append(rows)
    return out


# --------------------------------------------------------------------------- Eq. 7 + window + dedup: pairs
def sample_pairs(
    labels: Labels,
    grid: tuple[int, int],
    rng: random.Random,
    window: int | None = 2,
    dedup: bool = True,
) -> list[Pair]:
    """SEA's pair sampling, one image, patch, window and word at a time.

    1. Eq. 7: every patch keeps one of its labels, label j with probability
       ``s_j / Σ_k s_k`` (labels with score <= 0 are not labels).
    2. ``window``: every k×k window of the grid keeps one of its labelled
       patches, uniformly (edge windows of a grid not divisible by k are
       partial windows). None skips this stage.
    3. ``dedup``: every word keeps one of its pairs, uniformly, so InfoNCE has
       no false negatives. False skips this stage.

    Returns the kept pairs, sorted by (batch, patch).
    """
    h, w = grid
    pairs: list[Pair] = []
    for b, image in enumerate(labels):
        for p in range(h * w):
            cands = [(word, s) for word, s in image[p] if word >= 0 and s > 0]
            if cands:
                word, s = rng.choices(cands, weights=[s for _, s in cands])[0]
                pairs.append((b, p, word, s))
    if window is not None:
        per_window: dict[tuple[int, int, int], list[Pair]] = {}
        for pair in pairs:
            b, p = pair[0], pair[1]
            per_window.setdefault((b, (p // w) // window, (p % w) // window), []).append(pair)
        pairs = [rng.choice(members) for members in per_window.values()]
    if dedup:
        per_word: dict[int, list[Pair]] = {}
        for pair in pairs:
            per_word.setdefault(pair[2], []).append(pair)
        pairs = [rng.choice(members) for members in per_word.values()]
    return sorted(pairs)


# --------------------------------------------------------------------------- Eq. 8: word table
def word_table(embedding: Tensor, token_ids: Sequence[Sequence[int]]) -> Tensor:
    """Eq. 8: ``t_i = 1/M Σ_k Ψ(w_i^k)``, the mean input embedding of each word's M tokens.

    ``embedding`` is Ψ's (vocab, E) weight; ``token_ids[i]`` the tokens of word
    i (``word_table.word_token_ids``: the word mid-sentence, no BOS/EOS). A word
    with no tokens gets a zero row. Returns Float64[V, E].
    """
    weight = embedding.double().tolist()
    width = len(weight[0])
    rows = []
    for ids in token_ids:
        rows.append([math.fsum(weight[k][e] for k in ids) / len(ids) if ids else 0.0 for e in range(width)])
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------------------- Eq. 9: align loss
def info_nce(visual: Tensor, text: Tensor, scale: float) -> float:
    """Eq. 9: ``−1/(2N) Σ_i [log softmax_j(s·cos(x_i, t_j))_i + log softmax_j(s·cos(t_i, x_j))_i]``, s = 1/τ."""
    x = [_unit(r) for r in visual.double().tolist()]
    t = [_unit(r) for r in text.double().tolist()]
    n = len(x)
    if n == 0:
        return 0.0
    cos = [[_dot(x[i], t[j]) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        row = [scale * cos[i][j] for j in range(n)]  # x_i against every t_j
        col = [scale * cos[j][i] for j in range(n)]  # t_i against every x_j
        total += (row[i] - _logsumexp(row)) + (col[i] - _logsumexp(col))
    return -total / (2 * n)


def sigmoid_loss(visual: Tensor, text: Tensor, scale: float, bias: float) -> float:
    """SigLIP's loss, the alternative to Eq. 9: ``−(1/N) Σ_ij log σ(y_ij (s·cos_ij + b))``, y = +1 iff i = j."""
    x = [_unit(r) for r in visual.double().tolist()]
    t = [_unit(r) for r in text.double().tolist()]
    n = len(x)
    if n == 0:
        return 0.0
    terms = []
    for i in range(n):
        for j in range(n):
            m = scale * _dot(x[i], t[j]) + bias
            m = m if i == j else -m
            terms.append(max(-m, 0.0) + math.log1p(math.exp(-abs(m))))  # −log σ(m), overflow-free
    return math.fsum(terms) / n


# --------------------------------------------------------------------------- Eq. 11: the objective
def total_loss(loss_lm: float, loss_align: float, loss_weight: float = 1.0) -> float:
    """Eq. 11: ``L = L_lm + λ·L_align``; λ = 1.0 is the preset (the paper gives no value).

    Fast piece: ``LLaVAModel.parse_losses`` (its ``loss_align`` is already ``λ·L_align``).
    """
    return loss_lm + loss_weight * loss_align
