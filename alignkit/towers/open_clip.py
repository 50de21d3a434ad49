"""One forward of an open_clip image tower -> adapter features and dense joint-space embeddings.

``forward_features(visual, images, feature_layers=(-2,))`` runs the tower once
and returns both what the adapter reads (patch tokens of chosen blocks, no
prefix tokens) and what the labeler scores (one embedding per patch in the
image-text space), so an MLLM that already runs the tower for its adapter gets
labels without a second forward.

Layer indices count transformer blocks like Python lists: ``-1`` is the last
block's output, ``-2`` the one before (LLaVA's ``hidden_states[-2]``).

Prefix tokens are never dropped by position alone: an open_clip
``VisionTransformer`` always prepends a class token (``class_embedding``); a
timm trunk says how many it has (``num_prefix_tokens``: 0 for SigLIP); the
patch count is then checked against the grid.

Dense modes (``DENSE_MODES``, name -> :class:`DenseMode`) turn the final
block's patch tokens into joint-space embeddings:

- ``'proj'`` (CLIP ViT, the paper's choice): ``ln_post(token) @ proj`` — each
  token through the same norm and projection as the class token.
- ``'attn_pool_value'`` (SigLIP, timm ``AttentionPoolLatent`` head): each
  token alone through the pooling head. Attending from the latent to a single
  key gives softmax weight 1, so the head's output is its value path:
  ``y = proj(v(x))``, then the head's residual MLP ``y = y + mlp(norm(y))``,
  then whatever follows the pool (timm ``fc_norm``/``head``, open_clip
  ``head``). A one-token image therefore reproduces ``encode_image`` exactly.

Towers a mode cannot serve (attentional-pool CoCa, ``pool_type='none'``,
ResNets, timm trunks without a latent attention pool) raise ``ValueError``.
Register another mode by adding a :class:`DenseMode` to ``DENSE_MODES``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignkit.utils.validate import as_pair, check_image_batch, check_int


def _is_open_clip_vit(visual) -> bool:
    from open_clip.transformer import VisionTransformer

    return isinstance(visual, VisionTransformer)


def _is_timm_tower(visual) -> bool:
    from open_clip.timm_model import TimmModel

    return isinstance(visual, TimmModel)


# --------------------------------------------------------------------------- tower geometry

def tower_grid(visual) -> tuple[int, int]:
    """(H, W) patch grid of an open_clip image tower."""
    if _is_open_clip_vit(visual):
        return as_pair("grid_size", visual.grid_size)
    if _is_timm_tower(visual) and hasattr(visual.trunk, "patch_embed"):
        return as_pair("grid_size", visual.trunk.patch_embed.grid_size)
    raise ValueError(f"no patch grid for image tower {type(visual).__name__}; expected a ViT (open_clip or timm)")


def tower_image_size(visual) -> tuple[int, int]:
    """(H, W) input size in pixels the tower was built for."""
    if _is_open_clip_vit(visual):
        return as_pair("image_size", visual.image_size)
    if _is_timm_tower(visual) and hasattr(visual.trunk, "patch_embed"):
        # open_clip does not pass its image_size to timm; the trunk's own size is the real one.
        return as_pair("image_size", visual.trunk.patch_embed.img_size)
    raise ValueError(f"no image size for image tower {type(visual).__name__}")


def num_prefix_tokens(visual) -> int:
    """Tokens before the patches in the tower's sequence (class / register tokens)."""
    if _is_open_clip_vit(visual):
        return 1 if getattr(visual, "class_embedding", None) is not None else 0
    if _is_timm_tower(visual):
        return int(getattr(visual.trunk, "num_prefix_tokens", 0))
    raise ValueError(f"unsupported image tower {type(visual).__name__}")


def tower_input_dtype(visual) -> torch.dtype:
    """dtype the tower's patch embedding expects (open_clip's bf16/fp16 keeps some params in fp32)."""
    if _is_open_clip_vit(visual):
        return visual.conv1.weight.dtype
    if _is_timm_tower(visual) and hasattr(visual.trunk, "patch_embed"):
        return visual.trunk.patch_embed.proj.weight.dtype
    return next(visual.parameters()).dtype


def check_images(visual, images: Tensor) -> None:
    """ValueError unless ``images`` is (B, 3, H, W) at the tower's input size."""
    check_image_batch(images, tower_image_size(visual), "the labeler's `transform`")


# --------------------------------------------------------------------------- block runners
def _run_open_clip_vit(visual, images: Tensor, take: list[int]) -> tuple[list[Tensor], Tensor]:
    out = visual.forward_intermediates(
        images, indices=take, output_fmt="NLC", intermediates_only=True, output_extra_tokens=True
    )
    feats = out["image_intermediates"]  # each (B, P, D); open_clip splits off its one class token
    prefix = out.get("image_intermediates_prefix")
    n_prefix = num_prefix_tokens(visual)
    if prefix is not None and prefix[0].shape[1] != n_prefix:
        raise ValueError(f"open_clip split {prefix[0].shape[1]} prefix tokens, the tower has {n_prefix}")
    # 'proj' starts from the last block's raw output; ln_post is part of the mode.
    return list(feats), feats[-1]


def _run_timm(visual, images: Tensor, take: list[int]) -> tuple[list[Tensor], Tensor]:
    trunk = visual.trunk
    if not hasattr(trunk, "forward_intermediates"):
        raise ValueError(f"timm trunk {type(trunk).__name__} has no forward_intermediates")
    final, feats = trunk.forward_intermediates(images, indices=take, output_fmt="NLC", norm=False)
    # The pool head sees the trunk's final-normed tokens, prefix tokens (if any) removed.
    return list(feats), final[:, num_prefix_tokens(visual):]


def _num_blocks(visual) -> int:
    if _is_open_clip_vit(visual):
        return len(visual.transformer.resblocks)
    if _is_timm_tower(visual) and hasattr(visual.trunk, "blocks"):
        return len(visual.trunk.blocks)
    raise ValueError(f"unsupported image tower {type(visual).__name__}; expected an open_clip or timm ViT")


# --------------------------------------------------------------------------- dense modes
@dataclass(frozen=True)
class DenseMode:
    """How the final block's patch tokens become joint-space embeddings.

    ``check(visual)`` raises ValueError for a tower the mode cannot serve;
    ``__call__(visual, tokens (B, P, D)) -> (B, P, C)`` takes the final
    block's patch tokens as the tower's own head would see them (open_clip
    ViT: the raw block output, before ``ln_post``; timm: after the trunk's
    final ``norm``).
    """

    name: str
    check: Callable[[nn.Module], None]
    fn: Callable[[nn.Module, Tensor], Tensor]
    doc: str

    def __call__(self, visual, tokens: Tensor) -> Tensor:
        return self.fn(visual, tokens)


def _check_proj(visual) -> None:
    if not _is_open_clip_vit(visual):
        raise ValueError(
            f"dense_mode='proj' needs an open_clip VisionTransformer (CLIP ViT), got {type(visual).__name__}; "
            f"for SigLIP towers use dense_mode='attn_pool_value'"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError(
            "dense_mode='proj' does not support open_clip towers with an attentional pooler (CoCa): "
            "their tokens reach the projection only through the pooler's cross-attention"
        )
    if visual.pool_type not in ("tok", "avg"):
        raise ValueError(f"dense_mode='proj' supports pool_type 'tok' or 'avg', got {visual.pool_type!r}")
    if visual.proj is None:
        raise ValueError("dense_mode='proj' needs the tower's projection, but visual.proj is None")


def _dense_proj(visual, tokens: Tensor) -> Tensor:
    # (B, P, D) -> ln_post -> (B, P, D) @ (D, C) -> (B, P, C)
    return visual.ln_post(tokens) @ visual.proj


def _check_attn_pool_value(visual) -> None:
    from timm.layers import AttentionPoolLatent

    pool = getattr(getattr(visual, "trunk", None), "attn_pool", None)
    if not _is_timm_tower(visual) or not isinstance(pool, AttentionPoolLatent):
        raise ValueError(
            "dense_mode='attn_pool_value' needs an open_clip TimmModel whose trunk pools with timm's "
            f"AttentionPoolLatent (SigLIP, timm_pool='map'); got {type(visual).__name__} with "
            f"attn_pool={type(pool).__name__}"
        )
    if pool.pos_embed is not None and pool.feat_size != tower_grid(visual)[0] * tower_grid(visual)[1]:
        raise ValueError(f"attention pool has a positional embedding for {pool.feat_size} tokens, grid differs")


def _dense_attn_pool_value(visual, tokens: Tensor) -> Tensor:
    trunk = visual.trunk
    pool = trunk.attn_pool
    x = tokens
    if pool.pos_embed is not None:
        x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
    # kv(x) packs [k | v] along the last dim (reshape(B, N, 2, H, hd)): v is the second half.
    width = pool.kv.out_features // 2
    bias = pool.kv.bias[width:] if pool.kv.bias is not None else None
    v = F.linear(x, pool.kv.weight[width:], bias)  # (B, P, D) -> (B, P, E), heads concatenated
    y = pool.proj_drop(pool.proj(v))  # softmax over one key is 1: attention output = v
    if pool.mlp is not None:
        y = y + pool.mlp(pool.norm(y))
    # What follows the pool in timm's forward_head and open_clip's TimmModel.
    y = trunk.fc_norm(y)
    y = trunk.head_drop(y)
    y = trunk.head(y)
    return visual.head(y)  # (B, P, C)


DENSE_MODES: dict[str, DenseMode] = {
    "proj": DenseMode(
        "proj", _check_proj, _dense_proj,
        doc="final-layer tokens -> ln_post -> proj (CLIP ViT; the paper's choice)",
    ),
    "attn_pool_value": DenseMode(
        "attn_pool_value", _check_attn_pool_value, _dense_attn_pool_value,
        doc="each token alone through the attention-pool head: v -> out proj -> residual MLP (SigLIP)",
    ),
}

# Which mode a tower gets when none is named.
_DEFAULT_MODE = ((_is_open_clip_vit, "proj"), (_is_timm_tower, "attn_pool_value"))
_RUNNERS = ((_is_open_clip_vit, _run_open_clip_vit), (_is_timm_tower, _run_timm))


def get_dense_mode(name: str) -> DenseMode:
    if name not in DENSE_MODES:
        raise ValueError(f"dense_mode {name!r} is not one of {sorted(DENSE_MODES)}")
    return DENSE_MODES[name]


def default_dense_mode(visual) -> str:
    for test, name in _DEFAULT_MODE:
        if test(visual):
            return name
    raise ValueError(f"no dense mode for image tower {type(visual).__name__}; expected an open_clip or timm ViT")


def forward_features(
    visual: nn.Module,
    images: Tensor,
    feature_layers: Sequence[int] = (-2,),
    dense_mode: str | None = None,
) -> tuple[dict[int, Tensor], Tensor]:
    """One forward of ``visual``: patch features of ``feature_layers`` and dense embeddings.

    Args:
        visual: an open_clip image tower (``model.visual``), in eval mode.
        images: (B, 3, H, W) preprocessed at the tower's input size.
        feature_layers: block indices to return (Python-style, ``-2`` = the
            second-to-last block); may be empty.
        dense_mode: a key of ``DENSE_MODES``; None picks the tower's default.

    Returns:
        ``(features, dense)``: ``features[layer]`` is (B, P, D) with prefix
        tokens removed, keyed by the index as given; ``dense`` is (B, P, C).
        Gradients flow as the caller's autograd mode allows.
    """
    mode = get_dense_mode(dense_mode or default_dense_mode(visual))
    mode.check(visual)
    check_images(visual, images)
    n = _num_blocks(visual)
    absolute = {}
    for layer in feature_layers:
        check_int(f"feature layer (a block index of a tower of {n} blocks)", layer, low=-n, high=n - 1)
        absolute[layer] = layer % n
    take = sorted(set(absolute.values()) | {n - 1})
    run = next(r for test, r in _RUNNERS if test(visual))
    feats, final = run(visual, images, take)  # one (B, P, D) per index in `take`; final (B, P, D)
    h, w = tower_grid(visual)
    for f in (*feats, final):
        if f.shape[1] != h * w:
            raise ValueError(f"tower returned {f.shape[1]} patch tokens, grid {h}x{w} holds {h * w}")
    by_index = dict(zip(take, feats))
    dense = mode(visual, final)  # (B, P, D) -> (B, P, C)
    return {layer: by_index[idx] for layer, idx in absolute.items()}, dense
