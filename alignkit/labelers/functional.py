"""Top-n word search for patch embeddings: pure tensor functions, no state.

The similarity matrix of a batch against a word list is large (LLaVA-1.5 at
batch 256: 147,456 patches × 41,242 words = 6.1 G entries, 24 GB in fp32), so
:func:`chunked_topn` walks the patches in row chunks and only ever holds
``chunk_size × V`` similarities. Each row's top-k is taken over the whole word
list at once, so no merge across chunks is needed and the result equals a
full sort (:func:`naive_topn`, the reference the benchmark compares against).

In half precision (bf16/fp16, the fast path on GPU) the chunk's similarities
only *nominate* ``rescore_factor × k`` candidates; their scores are then
recomputed in fp32 from fp32 inputs and re-sorted, so returned scores are
fp32 dot products and the order is fp32's unless a true top-k word ranked
below ``rescore_factor × k`` in half precision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from alignkit.structures import EMPTY_WORD
from alignkit.utils.validate import check_int

LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check(dense: Tensor, bank: Tensor, k: int, chunk_size: int) -> None:
    if dense.dim() != 2 or bank.dim() != 2:
        raise ValueError(
            f"chunked_topn expects dense (M, C) and bank (V, C), got {tuple(dense.shape)} and {tuple(bank.shape)}"
        )
    if dense.shape[1] != bank.shape[1]:
        raise ValueError(
            f"dense width C={dense.shape[1]} does not match the text bank width C={bank.shape[1]}"
        )
    check_int("top_n", k, low=1, high=bank.shape[0])  # high: V, the word-list size
    check_int("chunk_size", chunk_size, low=1)


def chunked_topn(
    dense: Tensor,
    bank: Tensor,
    k: int,
    chunk_size: int = 1024,
    negate: bool = False,
    compute_dtype: torch.dtype | None = None,
    rescore_factor: int = 2,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` rows of ``bank`` for every row of ``dense`` by dot product.

    Args:
        dense: (M, C) query rows (L2-normalised by the caller for cosine).
        bank: (V, C) key rows (L2-normalised for cosine).
        k: how many keys per row, ``1 <= k <= V``.
        chunk_size: rows of ``dense`` scored at once; peak extra memory is
            about ``chunk_size × V`` similarities in ``compute_dtype``.
        negate: rank by ``-dense @ bank.T`` (the paper's Eq. 6).
        compute_dtype: dtype of the chunk matmul; None uses ``dense.dtype``.
            fp16/bf16 nominate candidates that are then rescored in fp32.
        rescore_factor: candidates per kept slot in half precision.

    Returns:
        ``(scores, ids)``: Float32[M, k] sorted descending, Long[M, k].
    """
    _check(dense, bank, k, chunk_size)
    m, v = dense.shape[0], bank.shape[0]
    compute_dtype = dense.dtype if compute_dtype is None else compute_dtype
    sign = -1.0 if negate else 1.0
    scores = torch.empty(m, k, dtype=torch.float32, device=dense.device)
    ids = torch.empty(m, k, dtype=torch.long, device=dense.device)
    if m == 0:
        return scores, ids
    rescore = compute_dtype in LOW_PRECISION
    bank_t = bank.to(device=dense.device, dtype=compute_dtype).t()  # (C, V)
    bank_f32 = bank.to(device=dense.device, dtype=torch.float32) if rescore else None
    n_cand = min(v, rescore_factor * k) if rescore else k
    for start in range(0, m, chunk_size):
        rows = dense[start:start + chunk_size]
        # Negate the (chunk, C) rows, not the (chunk, V) similarities: same result, V/C times less work.
        q = rows.to(compute_dtype) * sign if negate else rows.to(compute_dtype)
        sims = q @ bank_t  # (chunk, C) @ (C, V) -> (chunk, V)
        top_s, top_i = sims.topk(n_cand, dim=1)  # (chunk, n_cand)
        del sims
        if rescore:
            # (chunk, n_cand, C) · (chunk, 1, C) in fp32 -> exact scores of the candidates
            exact = (bank_f32[top_i] * rows.float().unsqueeze(1)).sum(-1) * sign
            exact, order = exact.sort(dim=1, descending=True)
            top_s, top_i = exact[:, :k], top_i.gather(1, order[:, :k])
        scores[start:start + chunk_size] = top_s.float()
        ids[start:start + chunk_size] = top_i
    return scores, ids


def naive_topn(dense: Tensor, bank: Tensor, k: int, negate: bool = False) -> tuple[Tensor, Tensor]:
    """Reference: the full (M, V) similarity matrix, each row fully sorted.

    Memory is ``M × V``; kept as the benchmark baseline and a readable spec.
    """
    _check(dense, bank, k, 1)
    sims = dense @ bank.to(dense).t()  # (M, C) @ (C, V) -> (M, V)
    if negate:
        sims = -sims
    s, i = sims.sort(dim=1, descending=True)
    return s[:, :k].float(), i[:, :k]


def drop_below(scores: Tensor, ids: Tensor, min_score: float) -> tuple[Tensor, Tensor]:
    """Empty every slot whose score is ``<= min_score``: id ``-1``, score ``0``.

    Scores are sorted descending, so dropped slots are always a row's tail.
    Returns new tensors; the inputs are not modified.
    """
    keep = scores > min_score
    return scores.masked_fill(~keep, 0.0), ids.masked_fill(~keep, EMPTY_WORD)


def cosine_topn(
    dense: Tensor,
    bank: Tensor,
    k: int,
    min_score: float = 0.0,
    negate: bool = False,
    chunk_size: int = 1024,
    compute_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` words of every row of ``dense`` (..., C) by (negated) cosine against ``bank`` (V, C).

    Args:
        dense: (..., C) embeddings, any float dtype (normalised here, in fp32);
            (B, P, C) for a batch of patch tokens.
        bank: (V, C) L2-normalised text features (``labeler.bank``).
        k: words kept per row, ``1 <= k <= V``.
        min_score: slots scoring ``<= min_score`` are emptied (id ``-1``, score 0).
        negate: rank by ``-cos`` (Eq. 6).
        chunk_size, compute_dtype: see :func:`chunked_topn`.

    Returns:
        ``(scores, ids)`` — **scores first**: Float32[..., k] sorted descending
        and Long[..., k] word ids. ``PatchLabels`` takes them the other way
        round, by keyword::

            scores, ids = cosine_topn(dense, bank, k=10, negate=True)     # dense (B, P, C)
            labels = PatchLabels(words=ids, scores=scores, grid=(24, 24))
    """
    lead = dense.shape[:-1]
    flat = F.normalize(dense.reshape(-1, dense.shape[-1]).float(), dim=-1)  # (M, C)
    scores, ids = chunked_topn(flat, bank, k, chunk_size, negate=negate, compute_dtype=compute_dtype)
    scores, ids = drop_below(scores, ids, min_score)
    return scores.reshape(*lead, k), ids.reshape(*lead, k)
