"""Splice visual tokens into a batch of token sequences at their image placeholders (LLaVA's layout).

``input_ids`` hold ``IMAGE_TOKEN_INDEX`` (−200) where an image goes. Each
placeholder is replaced by that image's P visual tokens; everything after it
shifts right by P − 1. Labels on visual tokens are ``IGNORE_INDEX`` (−100), the
attention mask is 1 on them, and a row without a placeholder (a text-only
sample) keeps its tokens where they were. Rows are then padded to the longest
row: zero embeddings, mask 0, label −100 — so the padding side of the input
(right for training) is kept.

Vectorised: one scatter for the text tokens and one for the visual tokens,
no loop over rows or images.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from alignkit.datasets.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


class Spliced(NamedTuple):
    """The LLM's inputs after splicing: ``inputs_embeds`` (B, L, E), ``labels`` (B, L) or None,
    ``attention_mask`` (B, L), and ``visual_positions`` (N_img, P): where each image's tokens landed."""

    inputs_embeds: Tensor
    labels: Tensor | None
    attention_mask: Tensor
    visual_positions: Tensor


def splice_visual_tokens(
    input_ids: Tensor,
    visual: Tensor,
    embed: Callable[[Tensor], Tensor],
    labels: Tensor | None = None,
    attention_mask: Tensor | None = None,
) -> Spliced:
    """Replace every ``IMAGE_TOKEN_INDEX`` in ``input_ids`` by one image's visual tokens.

    Args:
        input_ids: Long[B, T], with ``IMAGE_TOKEN_INDEX`` at image positions.
        visual: (N_img, P, E) visual tokens, one image per placeholder, in
            row-major order of the placeholders (row 0's first, ...).
        embed: the LLM's input embedding (Long ids -> (..., E)).
        labels: Long[B, T] or None.
        attention_mask: [B, T] (1 = token, 0 = padding) or None (all ones).

    Raises:
        ValueError: the number of placeholders differs from ``N_img``; shapes disagree.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    b, t = input_ids.shape
    for name, x in (("labels", labels), ("attention_mask", attention_mask)):
        if x is not None and x.shape != input_ids.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, input_ids {tuple(input_ids.shape)}")
    is_img = input_ids == IMAGE_TOKEN_INDEX  # (B, T)
    n_img = int(is_img.sum())
    if visual.dim() != 3 or visual.shape[0] != n_img:
        raise ValueError(
            f"input_ids hold {n_img} image placeholder(s) ({IMAGE_TOKEN_INDEX}), but visual has shape "
            f"{tuple(visual.shape)}; expected ({n_img}, P, E), one image per placeholder"
        )
    p = visual.shape[1]
    device = input_ids.device
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)

    # Where each original token lands: shifted by (P - 1) per placeholder before it.
    img_long = is_img.long()
    before = torch.cumsum(img_long, 1) - img_long  # (B, T) placeholders strictly before t
    new_pos = torch.arange(t, device=device) + before * (p - 1)  # (B, T)
    length = int((t + img_long.sum(1) * (p - 1)).max()) if b else t

    text = embed(input_ids.masked_fill(is_img, 0))  # (B, T, E); the placeholder's row is never used
    e = text.shape[-1]
    if visual.shape[-1] != e:
        raise ValueError(f"visual tokens have width {visual.shape[-1]}, the LLM's embeddings {e}")
    tb, tt = (~is_img).nonzero(as_tuple=True)  # (M,) text tokens
    ib, it = is_img.nonzero(as_tuple=True)  # (N_img,) placeholders, row-major = image order
    vis_pos = new_pos[ib, it].unsqueeze(1) + torch.arange(p, device=device)  # (N_img, P)
    vis_rows = ib.unsqueeze(1).expand(-1, p)  # (N_img, P)

    embeds = text.new_zeros(b, length, e)
    embeds = embeds.index_put((tb, new_pos[tb, tt]), text[tb, tt])
    embeds = embeds.index_put((vis_rows, vis_pos), visual.to(text.dtype))  # (B, L, E)

    mask = attention_mask.new_zeros(b, length)
    mask = mask.index_put((tb, new_pos[tb, tt]), attention_mask[tb, tt])
    mask = mask.index_put((vis_rows, vis_pos), attention_mask.new_ones(()).expand(n_img, p))

    out_labels = None
    if labels is not None:
        out_labels = labels.new_full((b, length), IGNORE_INDEX)
        out_labels = out_labels.index_put((tb, new_pos[tb, tt]), labels[tb, tt])
    return Spliced(embeds, out_labels, mask, vis_pos)
