"""One forward of a Hugging Face transformers CLIP / SigLIP vision tower -> adapter features and dense embeddings.

The transformers twin of :mod:`alignkit.towers.open_clip`, with the same
contract and numerically equal on the same weights (``tests/towers``):
``forward_features(model, images, feature_layers=(-2,))`` runs the tower once
and returns the patch tokens of the chosen blocks (what the adapter reads) and
one joint-space embedding per patch (what the labeler scores).

``model`` is what LLaVA and most MLLM code load: a ``CLIPModel``,
``CLIPVisionModelWithProjection``, ``SiglipModel`` or ``SiglipVisionModel``
(a bare ``CLIPVisionModel`` gives features but has no projection for dense
embeddings). Layer indices count encoder layers like Python lists, so ``-2``
is exactly LLaVA's ``CLIPVisionTower.feature_select``:
``hidden_states[-2][:, 1:]`` — ``hidden_states[0]`` is the embedding output,
so block ``l`` is ``hidden_states[l % n + 1]``. The class token is dropped
because CLIP's embeddings have one (``class_embedding``); SigLIP's have none
and nothing is dropped.

Dense modes (``DENSE_MODES``), computed from the tower output's
``last_hidden_state`` — which every transformers version computes whatever
hidden states a caller asked for (LLaVA-HF asks for layer −2 only):

- ``'proj'`` (CLIP): ``visual_projection(post_layernorm(token))`` for every
  patch token — the path of the class token, applied per patch (Eq. 6's
  ``v_i``). CLIP's ``last_hidden_state`` is the raw last-layer output.
- ``'attn_pool_value'`` (SigLIP): SigLIP's ``last_hidden_state`` is already
  ``post_layernorm``-ed; each token alone goes through
  ``SiglipMultiheadAttentionPoolingHead``. Attending from the probe to a single
  key gives softmax weight 1, so the head is its value path: ``v`` slice of
  ``in_proj``, ``out_proj``, then ``y + mlp(layernorm(y))``. A one-token image
  reproduces ``get_image_features`` exactly.

transformers 4.x and 5.x differ in where the vision transformer sits
(``CLIPModel.vision_model`` is a ``CLIPVisionTransformer`` in 4.x and a
``CLIPVisionModel`` in 5.x) and in what ``get_text_features`` returns (a
tensor in 4.x, a ``BaseModelOutputWithPooling`` in 5.x); both are handled here
(:func:`vision_core`, :func:`text_features`) and nowhere else.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignkit.towers.open_clip import DenseMode
from alignkit.utils.validate import as_pair, check_image_batch


BACKEND = "transformers"
# model_type of each config -> the family whose dense mode applies
KINDS = {
    "clip": "clip", "clip_vision_model": "clip", "clip_text_model": "clip",
    "siglip": "siglip", "siglip_vision_model": "siglip", "siglip_text_model": "siglip",
}
VLM_TYPES = ("clip", "siglip")


def is_transformers_tower(model) -> bool:
    """True for a transformers model (as opposed to an open_clip tower)."""
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def model_kind(model) -> str:
    """``'clip'`` or ``'siglip'``; ``ValueError`` for any other transformers model."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if not is_transformers_tower(model) or model_type not in KINDS:
        raise ValueError(
            f"{type(model).__name__} (model_type {model_type!r}) is not a transformers CLIP or SigLIP model; "
            f"expected a CLIPModel, SiglipModel or their vision models (model_type one of {sorted(KINDS)})"
        )
    return KINDS[model_type]


def vision_core(model) -> nn.Module:
    """The module holding ``embeddings``, ``encoder`` and ``post_layernorm`` (called for the forward)."""
    model_kind(model)
    core = model
    # 5.x: CLIPModel.vision_model is a CLIPVisionModel; 4.x: CLIP(Vision)Model.vision_model is the transformer.
    while not (hasattr(core, "embeddings") and hasattr(core, "encoder")) and hasattr(core, "vision_model"):
        core = core.vision_model
    if not (hasattr(core, "embeddings") and hasattr(core, "encoder") and hasattr(core, "post_layernorm")):
        raise ValueError(f"{type(model).__name__} has no vision transformer (embeddings, encoder, post_layernorm)")
    return core


def vision_config(model):
    config = model.config
    return getattr(config, "vision_config", None) or config


# --------------------------------------------------------------------------- tower geometry
def tower_image_size(model) -> tuple[int, int]:
    """(H, W) input size in pixels, from the vision config."""
    return as_pair("image_size", vision_config(model).image_size)


def tower_grid(model) -> tuple[int, int]:
    """(H, W) patch grid: image size // patch size, from the vision config."""
    cfg = vision_config(model)
    (h, w), (ph, pw) = as_pair("image_size", cfg.image_size), as_pair("patch_size", cfg.patch_size)
    return h // ph, w // pw


def num_prefix_tokens(model) -> int:
    """1 when the embeddings prepend a class token (CLIP), 0 otherwise (SigLIP)."""
    return 1 if getattr(vision_core(model).embeddings, "class_embedding", None) is not None else 0


def num_blocks(model) -> int:
    return int(vision_config(model).num_hidden_layers)


def tower_width(model) -> int:
    """D, the width of the encoder layers (what the adapter reads)."""
    return int(vision_config(model).hidden_size)


def tower_input_dtype(model) -> torch.dtype:
    return vision_core(model).embeddings.patch_embedding.weight.dtype


def check_images(model, images: Tensor) -> None:
    """ValueError unless ``images`` is (B, 3, H, W) at the tower's input size."""
    check_image_batch(images, tower_image_size(model), "the labeler's / encoder's `transform` (HFImageProcessor)")


# --------------------------------------------------------------------------- dense modes
def _projection(model):
    return getattr(model, "visual_projection", None)


def _check_proj(model) -> None:
    if model_kind(model) != "clip":
        raise ValueError(
            f"dense_mode='proj' needs a transformers CLIP model, got {type(model).__name__}; "
            "for SigLIP use dense_mode='attn_pool_value'"
        )
    if not isinstance(_projection(model), nn.Linear):
        raise ValueError(
            f"dense_mode='proj' needs the tower's visual_projection, but {type(model).__name__} has none; "
            "load the full CLIPModel (or CLIPVisionModelWithProjection) of the same weights"
        )


def _dense_proj(model, last_hidden: Tensor) -> Tensor:
    core = vision_core(model)
    tokens = last_hidden[:, num_prefix_tokens(model):]  # (B, 1 + P, D) -> (B, P, D), the class token removed
    return model.visual_projection(core.post_layernorm(tokens))  # (B, P, D) -> (B, P, C)


def _pool_head(model):
    core = vision_core(model)
    return getattr(core, "head", None) if getattr(core, "use_head", True) else None


def _check_attn_pool_value(model) -> None:
    if model_kind(model) != "siglip":
        raise ValueError(
            f"dense_mode='attn_pool_value' needs a transformers SigLIP model, got {type(model).__name__}; "
            "for CLIP use dense_mode='proj'"
        )
    head = _pool_head(model)
    if head is None or not isinstance(getattr(head, "attention", None), nn.MultiheadAttention):
        raise ValueError(
            f"dense_mode='attn_pool_value' needs SigLIP's attention-pool head, but {type(model).__name__} has "
            "none (vision_use_head=False); load the full SiglipModel of the same weights"
        )


def _dense_attn_pool_value(model, last_hidden: Tensor) -> Tensor:
    head = _pool_head(model)
    attn = head.attention
    d = attn.embed_dim
    # in_proj packs [q | k | v] along the output dim: v is the last third.
    bias = attn.in_proj_bias[2 * d:] if attn.in_proj_bias is not None else None
    v = F.linear(last_hidden, attn.in_proj_weight[2 * d:], bias)  # (B, P, D) -> (B, P, D), heads concatenated
    y = attn.out_proj(v)  # softmax over one key is 1: attention output = out_proj(v)
    return y + head.mlp(head.layernorm(y))  # (B, P, C = D)


_DEFAULT_MODE = {"clip": "proj", "siglip": "attn_pool_value"}


def get_dense_mode(name: str) -> DenseMode:
    if name not in DENSE_MODES:
        raise ValueError(f"dense_mode {name!r} is not one of {sorted(DENSE_MODES)} (transformers towers)")
    return DENSE_MODES[name]


def default_dense_mode(model) -> str:
    return _DEFAULT_MODE[model_kind(model)]


def dense_from_output(model, last_hidden: Tensor, dense_mode: str | None = None) -> Tensor:
    """Dense embeddings (B, P, C) from a tower output's ``last_hidden_state`` (B, prefix + P, D).

    For callers that ran the tower themselves (``alignkit.integrations.transformers``):
    ``model`` provides the head (``post_layernorm`` + ``visual_projection``, or
    SigLIP's pool head); ``last_hidden`` may come from another module holding the
    same weights (LLaVA's ``CLIPVisionModel``).
    """
    mode = get_dense_mode(dense_mode or default_dense_mode(model))
    mode.check(model)
    h, w = tower_grid(model)
    expect = num_prefix_tokens(model) + h * w
    if last_hidden.dim() != 3 or last_hidden.shape[1] != expect or last_hidden.shape[2] != tower_width(model):
        raise ValueError(
            f"last_hidden_state has shape {tuple(last_hidden.shape)}, expected (B, {expect}, {tower_width(model)}) "
            f"for a {h}x{w} grid"
        )
    return mode(model, last_hidden)


def forward_features(
    model: nn.Module,
    images: Tensor,
    feature_layers: Sequence[int] = (-2,),
    dense_mode: str | None = None,
) -> tuple[dict[int, Tensor], Tensor | None]:
    """One forward of ``model``'s vision tower: patch features of ``feature_layers`` and dense embeddings.

    Args:
        model: a transformers CLIP / SigLIP model (module docstring), in eval mode.
        images: (B, 3, H, W) preprocessed at the tower's input size (``HFImageProcessor``).
        feature_layers: encoder-layer indices, Python-style (``-2`` = LLaVA's
            ``select_layer``); may be empty.
        dense_mode: a key of ``DENSE_MODES``; None picks the tower's default;
            ``'none'`` skips the dense embeddings (a tower without a projection).

    Returns:
        ``(features, dense)``: ``features[layer]`` is (B, P, D) with the class
        token (if any) removed, keyed by the index as given; ``dense`` is
        (B, P, C), or None for ``dense_mode='none'``.
    """
    want_dense = dense_mode != "none"
    mode = get_dense_mode(dense_mode or default_dense_mode(model)) if want_dense else None
    if mode is not None:
        mode.check(model)
    check_images(model, images)
    n = num_blocks(model)
    absolute = {}
    for layer in feature_layers:
        if not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n:
            raise ValueError(f"feature layer {layer!r} is out of range for a tower of {n} layers; expected -{n}..{n - 1}")
        absolute[layer] = layer % n
    core = vision_core(model)
    # hidden_states[0] is the embedding output; block a's output is hidden_states[a + 1].
    out = core(pixel_values=images, output_hidden_states=True, return_dict=True)
    hidden = out.hidden_states
    if hidden is None or len(hidden) != n + 1:
        raise ValueError(f"the tower returned {0 if hidden is None else len(hidden)} hidden states, expected {n + 1}")
    prefix = num_prefix_tokens(model)
    h, w = tower_grid(model)
    feats = {}
    for layer, a in absolute.items():
        f = hidden[a + 1]
        if f.shape[1] != prefix + h * w:
            raise ValueError(f"layer {layer} has {f.shape[1]} tokens, expected {prefix} prefix + {h * w} patches")
        feats[layer] = f[:, prefix:]  # (B, prefix + P, D) -> (B, P, D)
    dense = mode(model, out.last_hidden_state) if mode is not None else None
    return feats, dense


def joint_dim(model) -> int:
    """C of the tower: the projection's width (CLIP) or the pool head's (SigLIP: the tower width)."""
    if model_kind(model) == "clip":
        proj = _projection(model)
        if proj is None:
            raise ValueError(f"{type(model).__name__} has no visual_projection: no joint space to label in")
        return int(proj.out_features)
    return tower_width(model)


def vision_only(model) -> nn.Module:
    """The vision side of a ``CLIPModel`` / ``SiglipModel`` as a model of its own, sharing the modules.

    A ``CLIPVisionModelWithProjection`` / ``SiglipVisionModel`` whose
    submodules *are* ``model``'s (no copy), so a vision encoder can hold the
    tower without the text tower landing in its ``state_dict``. A model without
    a text tower is returned as it is.
    """
    import transformers

    kind = model_kind(model)
    if not hasattr(model, "text_model"):
        return model
    vcfg = vision_config(model)
    if kind == "clip":
        cfg = type(vcfg)(**{**vcfg.to_dict(), "projection_dim": joint_dim(model)})
        with torch.device("meta"):
            out = transformers.CLIPVisionModelWithProjection(cfg)
        out.vision_model = model.vision_model
        out.visual_projection = model.visual_projection
    else:
        if isinstance(model.vision_model, transformers.SiglipVisionModel):  # 5.x: already a model of its own
            return model.vision_model
        with torch.device("meta"):
            out = transformers.SiglipVisionModel(vcfg)
        out.vision_model = model.vision_model
    return out.eval()


# --------------------------------------------------------------------------- text side
def text_features(model, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """(N, C) unnormalised joint-space text features from a CLIP/SigLIP model or text model.

    ``CLIPModel`` / ``SiglipModel``: ``get_text_features`` (a tensor in 4.x, a
    ``BaseModelOutputWithPooling`` in 5.x); ``CLIPTextModelWithProjection``:
    ``text_embeds``; ``SiglipTextModel``: ``pooler_output`` (after its head).
    """
    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
    if hasattr(model, "get_text_features"):
        out = model.get_text_features(input_ids=input_ids, **kwargs)
    else:
        out = model(input_ids=input_ids, **kwargs)
    if isinstance(out, Tensor):
        return out
    for key in ("text_embeds", "pooler_output"):
        value = getattr(out, key, None)
        if isinstance(value, Tensor):
            return value
    raise ValueError(f"{type(model).__name__} returned {type(out).__name__} without text_embeds or pooler_output")


def text_embed_dim(model) -> int:
    """C of the text side: the projection's (CLIP) or the head's (SigLIP) output width."""
    text = getattr(model, "text_model", model)
    for owner, name in ((model, "text_projection"), (text, "head")):
        layer = getattr(owner, name, None)
        if isinstance(layer, nn.Linear):
            return int(layer.out_features)
    raise ValueError(
        f"{type(model).__name__} has no text projection (CLIP text_projection / SigLIP head); load a CLIPModel, "
        "SiglipModel, CLIPTextModelWithProjection or SiglipTextModel"
    )


# --------------------------------------------------------------------------- the mode table
DENSE_MODES: dict[str, DenseMode] = {
    "proj": DenseMode(
        "proj", _check_proj, _dense_proj,
        doc="last-layer patch tokens -> post_layernorm -> visual_projection (CLIP; the paper's choice)",
    ),
    "attn_pool_value": DenseMode(
        "attn_pool_value", _check_attn_pool_value, _dense_attn_pool_value,
        doc="each token alone through SigLIP's attention-pool head: v -> out_proj -> residual MLP",
    ),
}
