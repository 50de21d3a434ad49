"""Alignment metrics on plain tensors: how close visual tokens sit to the LLM embeddings of their words.

Pure functions, no state, no Runner; ``AlignmentMetric`` and the tools call them.
Every function works in fp32 on detached inputs (``torch.no_grad``), whatever the
inputs' dtype, and compares by cosine (rows are L2-normalised here; a zero row,
e.g. a word without tokens, has cosine 0 with everything).

The word table can be large (V = 41,242 words × E = 4,096 for LLaVA-1.5), so the
functions that score every row of it walk ``table`` in chunks of ``chunk_size``
rows and only ever hold ``N × chunk_size`` similarities.

- :func:`label_ranks` / :func:`label_retrieval`: where a patch's label word ranks
  among all V words by cosine with its visual token (1 = nearest).
- :func:`nearest_words` / :func:`nearest_word_agreement`: whether a visual
  token's nearest word is one of its labeler top-n.
- :func:`tacs`: SEA v2's TACS (top-10 mean of each visual token's best cosine to
  the caption's token embeddings).
- :func:`label_cosine`: mean cosine between visual tokens and their label rows.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from alignkit.structures import EMPTY_WORD, PatchLabels
from alignkit.utils.validate import check_int, check_ints

__all__ = [
    "label_cosine",
    "label_ranks",
    "label_retrieval",
    "nearest_word_agreement",
    "nearest_words",
    "tacs",
]


# ---------------------------------------------------------------------------- checks
def _matrix(x, name: str, width: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.dtype.is_floating_point:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float (rows, E) tensor, got {shape}")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{name} has width E={x.shape[1]}, expected {width} (the word table's / visual tokens' width)")
    return x


def _chunk(chunk_size) -> int:
    return check_int("chunk_size", chunk_size, low=1)


def _word_ids(words, n: int, v: int) -> Tensor:
    if not isinstance(words, Tensor) or words.dim() != 1 or words.dtype.is_floating_point or words.dtype == torch.bool:
        shape = tuple(words.shape) if isinstance(words, Tensor) else type(words).__name__
        raise ValueError(f"words must be a Long[N] tensor of word ids, got {shape}")
    if words.shape[0] != n:
        raise ValueError(f"words has {words.shape[0]} ids but visual has N={n} rows; they must pair up")
    if n and (int(words.min()) < 0 or int(words.max()) >= v):
        raise ValueError(
            f"words must be word ids in [0, V={v}), got values in [{int(words.min())}, {int(words.max())}]"
        )
    return words.long()


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x.detach().float(), dim=-1)


def _valid_mask(valid, v: int, device) -> Tensor | None:
    if valid is None:
        return None
    if not isinstance(valid, Tensor) or valid.shape != (v,):
        shape = tuple(valid.shape) if isinstance(valid, Tensor) else type(valid).__name__
        raise ValueError(f"valid must be Bool[V={v}] (the word table's valid rows), got {shape}")
    return valid.to(device=device, dtype=torch.bool)


# ---------------------------------------------------------------------------- label retrieval
@torch.no_grad()
def label_ranks(
    visual: Tensor, table: Tensor, words: Tensor, valid: Tensor | None = None, chunk_size: int = 4096
) -> Tensor:
    """1-based rank of each pair's label word among all V rows of ``table`` by cosine with its visual token.

    Rank = 1 + the number of *other* rows with a strictly higher cosine (ties
    count in the label's favour, so a visual token equal to its label's row
    has rank 1).

    Args:
        visual: (N, E) visual tokens of N sampled (patch, label) pairs.
        table: (V, E) the word table.
        words: Long[N] the label word id of each pair.
        valid: optional Bool[V]; rows with False (words without tokens) are never
            counted as ranking above a label.
        chunk_size: rows of ``table`` scored at once.

    Returns:
        Long[N] ranks in [1, V].
    """
    table = _matrix(table, "table")
    visual = _matrix(visual, "visual", table.shape[1])
    words = _word_ids(words, visual.shape[0], table.shape[0])
    chunk_size = _chunk(chunk_size)
    valid = _valid_mask(valid, table.shape[0], table.device)
    x = _unit(visual)  # (N, E)
    t = _unit(table)  # (V, E)
    words = words.to(t.device)
    own = (x * t[words].to(x.device)).sum(-1)  # (N,) cosine with the label row
    above = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, t.shape[0], chunk_size):
        sims = x @ t[start:start + chunk_size].to(x.device).T  # (N, chunk)
        higher = sims > own[:, None]
        # The label's own column never counts against it (matmul and row-dot round differently).
        cols = torch.arange(start, start + sims.shape[1], device=x.device)
        higher &= cols[None, :] != words.to(x.device)[:, None]
        if valid is not None:
            higher &= valid[start:start + chunk_size].to(x.device)[None, :]
        above += higher.sum(-1)
    return above + 1


@torch.no_grad()
def label_retrieval(
    visual: Tensor,
    table: Tensor,
    words: Tensor,
    ks: Sequence[int] = (1, 5),
    valid: Tensor | None = None,
    chunk_size: int = 4096,
) -> dict[str, float]:
    """Top-k accuracy and mean rank of label retrieval (:func:`label_ranks`).

    Returns:
        ``{'label_top{k}': share of pairs with rank <= k for each k in ks,
        'label_mean_rank': mean rank}``; NaN values for N = 0.
    """
    ks = check_ints("ks", ks, low=1)
    ranks = label_ranks(visual, table, words, valid=valid, chunk_size=chunk_size).double()
    nan = float("nan")
    out = {f"label_top{k}": float((ranks <= k).double().mean()) if len(ranks) else nan for k in ks}
    out["label_mean_rank"] = float(ranks.mean()) if len(ranks) else nan
    return out


@torch.no_grad()
def label_cosine(visual: Tensor, table: Tensor, words: Tensor) -> float:
    """Mean cosine between each visual token (N, E) and its label's row ``table[words]`` (NaN for N = 0)."""
    table = _matrix(table, "table")
    visual = _matrix(visual, "visual", table.shape[1])
    words = _word_ids(words, visual.shape[0], table.shape[0])
    if visual.shape[0] == 0:
        return float("nan")
    rows = table[words.to(table.device)].to(visual.device)  # (N, E)
    return float((_unit(visual) * _unit(rows)).sum(-1).double().mean())


# ---------------------------------------------------------------------------- nearest word
@torch.no_grad()
def nearest_words(
    visual: Tensor, table: Tensor, chunk_size: int = 4096, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The nearest row of ``table`` by cosine for every visual token.

    Args:
        visual: (M, E) visual tokens.
        table: (V, E) the word table, or the LLM's whole input-embedding matrix.
        chunk_size: rows of ``table`` scored at once.
        valid: optional Bool[V]; rows with False are never nearest.

    Returns:
        Long[M] row ids and Float[M] their cosines (fp32). Ties go to the lowest id.
    """
    table = _matrix(table, "table")
    visual = _matrix(visual, "visual", table.shape[1])
    chunk_size = _chunk(chunk_size)
    valid = _valid_mask(valid, table.shape[0], table.device)
    x = _unit(visual)  # (M, E)
    best = torch.full((x.shape[0],), float("-inf"), device=x.device)
    best_id = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, table.shape[0], chunk_size):
        t = _unit(table[start:start + chunk_size]).to(x.device)
        sims = x @ t.T  # (M, chunk)
        if valid is not None:
            sims = sims.masked_fill(~valid[start:start + chunk_size].to(x.device)[None, :], float("-inf"))
        if sims.shape[1] == 0:
            continue
        value, idx = sims.max(-1)
        better = value > best  # strict: an earlier chunk keeps a tie
        best = torch.where(better, value, best)
        best_id = torch.where(better, idx + start, best_id)
    return best_id, best


@torch.no_grad()
def nearest_word_hits(
    visual: Tensor,
    table: Tensor,
    labels: PatchLabels,
    word_token_ids: Tensor | None = None,
    valid: Tensor | None = None,
    chunk_size: int = 4096,
) -> tuple[Tensor, Tensor]:
    """Per-token parts of :func:`nearest_word_agreement`: (hit Bool[B, P], labelled Bool[B, P])."""
    if not isinstance(labels, PatchLabels):
        raise ValueError(f"labels must be PatchLabels, got {type(labels).__name__}")
    if not isinstance(visual, Tensor) or visual.dim() != 3:
        shape = tuple(visual.shape) if isinstance(visual, Tensor) else type(visual).__name__
        raise ValueError(f"visual must be (B, P, E) visual tokens, got {shape}")
    b, p, e = visual.shape
    if labels.batch_size != b or labels.num_patches != p:
        raise ValueError(f"labels cover (B, P)=({labels.batch_size}, {labels.num_patches}), visual ({b}, {p})")
    ids, _ = nearest_words(visual.reshape(b * p, e), table, chunk_size=chunk_size, valid=valid)
    ids = ids.reshape(b, p)  # (B, P) nearest row
    words = labels.words.to(ids.device).long()  # (B, P, K)
    labelled = (words != EMPTY_WORD).any(-1) if words.shape[-1] else torch.zeros(b, p, dtype=torch.bool)
    if word_token_ids is None:
        hit = (words == ids[..., None]).any(-1) if words.shape[-1] else torch.zeros_like(labelled)
    else:
        # Over the LLM's vocabulary: a hit when the nearest token is one of the tokens of any labelled word.
        if word_token_ids.dim() != 2:
            raise ValueError(
                f"word_token_ids must be Long[V, L] (each word's token ids, -1 padded), got {tuple(word_token_ids.shape)}"
            )
        tok = word_token_ids.to(ids.device).long()[words.clamp(min=0)]  # (B, P, K, L)
        tok = tok.masked_fill((words == EMPTY_WORD)[..., None], -1)
        hit = (tok == ids[..., None, None]).flatten(2).any(-1)
    return hit & labelled, labelled


@torch.no_grad()
def nearest_word_agreement(
    visual: Tensor,
    table: Tensor,
    labels: PatchLabels,
    word_token_ids: Tensor | None = None,
    valid: Tensor | None = None,
    chunk_size: int = 4096,
) -> float:
    """Share of visual tokens (with >= 1 label) whose nearest word is among their labeler top-n.

    Args:
        visual: (B, P, E) visual tokens.
        table: (V, E) the word table (nearest *word*), or, with
            ``word_token_ids``, the LLM's input-embedding matrix (vocab, E)
            (nearest *token*: a hit when it is a token of one of the top-n words).
        labels: the labeler's ``PatchLabels`` for the same B images.
        word_token_ids: Long[V, L] token ids of each word (``word_token_ids``
            of :mod:`alignkit.word_table`, padded with -1), for the vocabulary option.
        valid: optional Bool[rows of table]; False rows are never nearest.

    Returns:
        The share in [0, 1]; NaN when no token has a label.
    """
    hit, labelled = nearest_word_hits(visual, table, labels, word_token_ids, valid=valid, chunk_size=chunk_size)
    n = int(labelled.sum())
    return float(hit.sum()) / n if n else float("nan")


# ---------------------------------------------------------------------------- TACS
@torch.no_grad()
def tacs(
    visual: Tensor,
    caption_embeds: Tensor | Sequence[Tensor],
    caption_mask: Tensor | None = None,
    top: int = 10,
) -> Tensor:
    """TACS (SEA v2) of every image: the mean of the ``top`` largest best-caption-token cosines.

    For each visual token, its highest cosine to the embeddings of the caption's
    tokens; per image, the mean of the ``top`` largest such values (all P if
    P < top). The paper averages it over images (100 COCO val images).

    Args:
        visual: (B, P, E) visual tokens.
        caption_embeds: B tensors (T_i, E) of the caption tokens' LLM input
            embeddings, or one padded (B, T, E) tensor with ``caption_mask``.
        caption_mask: Bool[B, T], True at real caption tokens (padded form only).
        top: how many of the best visual tokens to average (10 in the paper).

    Returns:
        Float[B] (fp32); NaN for an image whose caption has no tokens.
    """
    if not isinstance(visual, Tensor) or visual.dim() != 3 or not visual.dtype.is_floating_point:
        shape = tuple(visual.shape) if isinstance(visual, Tensor) else type(visual).__name__
        raise ValueError(f"visual must be float (B, P, E) visual tokens, got {shape}")
    check_int("top", top, low=1)
    b, p, e = visual.shape
    if isinstance(caption_embeds, Tensor):
        if caption_embeds.dim() != 3 or caption_embeds.shape[0] != b or caption_embeds.shape[2] != e:
            raise ValueError(f"caption_embeds must be (B={b}, T, E={e}), got {tuple(caption_embeds.shape)}")
        padded = caption_embeds
        if caption_mask is None:
            mask = torch.ones(padded.shape[:2], dtype=torch.bool, device=padded.device)
        elif caption_mask.shape != padded.shape[:2]:
            raise ValueError(f"caption_mask must be Bool[B, T]={tuple(padded.shape[:2])}, got {tuple(caption_mask.shape)}")
        else:
            mask = caption_mask.to(torch.bool)
    else:
        caps = list(caption_embeds)
        if caption_mask is not None:
            raise ValueError("caption_mask goes with a padded (B, T, E) caption_embeds, not a list")
        if len(caps) != b:
            raise ValueError(f"caption_embeds has {len(caps)} captions, visual B={b} images")
        for i, c in enumerate(caps):
            if not isinstance(c, Tensor) or c.dim() != 2 or c.shape[1] != e:
                shape = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                raise ValueError(f"caption_embeds[{i}] must be (T_i, E={e}), got {shape}")
        t_max = max((c.shape[0] for c in caps), default=0)
        padded = visual.new_zeros(b, t_max, e, dtype=torch.float32)
        mask = torch.zeros(b, t_max, dtype=torch.bool, device=visual.device)
        for i, c in enumerate(caps):  # B captions, not patches: a loop over images is fine
            padded[i, : c.shape[0]] = c.detach().to(device=visual.device, dtype=torch.float32)
            mask[i, : c.shape[0]] = True
    x = _unit(visual)  # (B, P, E)
    c = _unit(padded).to(x.device)  # (B, T, E)
    mask = mask.to(x.device)
    sims = torch.einsum("bpe,bte->bpt", x, c).masked_fill(~mask[:, None, :], float("-inf"))  # (B, P, T)
    best = sims.amax(-1) if sims.shape[-1] else x.new_full((b, p), float("-inf"))  # (B, P)
    k = min(top, p)
    if k == 0:
        return x.new_full((b,), float("nan"))
    score = best.topk(k, dim=-1).values.mean(-1)  # (B,)
    return torch.where(mask.any(-1), score, torch.full_like(score, float("nan")))
