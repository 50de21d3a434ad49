"""``OpenCLIPVisionEncoder``: an open_clip CLIP/SigLIP image tower as an MLLM's vision encoder.

One forward serves both consumers of the tower (docs/design.md, "Tower
backends"): the adapter's input — patch tokens of block ``feature_layer``
(layer −2 by default, LLaVA's choice), prefix tokens removed by what the tower
*is*, never by a blind ``[:, 1:]`` — and the labeler's dense joint-space
embeddings (final block → the tower's own head, see
:mod:`alignkit.towers.open_clip`). The forward itself is the labeler
package's ``forward_features``; this module owns the tower.

The tower can come from three places:

- ``loaded``: a :class:`~alignkit.towers.open_clip_loader.LoadedModel` someone
  already created — ``LLaVAModel`` passes the aligner's labeler's model here so
  the process holds one copy of the tower;
- ``model_name`` + ``pretrained``: created with ``load_open_clip`` (an
  open_clip tag, a local weights file, or None for random weights);
- ``init_empty=True``: created on the ``meta`` device from open_clip's bundled
  config — no weights, no download, no memory; for checking a config's shapes.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from alignkit.models.zero3 import register_params_read_outside_forward
from alignkit.registry import MODELS
from alignkit.towers.open_clip import (
    _is_open_clip_vit,
    _is_timm_tower,
    _num_blocks,
    default_dense_mode,
    forward_features,
    get_dense_mode,
    tower_grid,
    tower_image_size,
)
from alignkit.towers.open_clip_loader import load_open_clip
from alignkit.utils.validate import check_bool, check_int


class VisionOutput(NamedTuple):
    """What one tower forward gives: ``features`` (B, P, D) for the adapter, ``dense`` (B, P, C) for the labeler."""

    features: Tensor
    dense: Tensor


def _tower_width(visual) -> int:
    """D, the width of the tower's blocks (what the adapter reads)."""
    if _is_open_clip_vit(visual):
        return int(visual.transformer.width)
    if _is_timm_tower(visual):
        return int(visual.trunk.embed_dim)
    raise ValueError(f"unsupported image tower {type(visual).__name__}; expected an open_clip or timm ViT")


@MODELS.register_module()
class OpenCLIPVisionEncoder(nn.Module):
    """An open_clip image tower: ``forward(images) -> VisionOutput(features (B, P, D), dense (B, P, C))``.

    Args:
        model_name: open_clip model name (``'ViT-L-14-336'``, ``'ViT-SO400M-14-SigLIP-384'``)
            or ``'local-dir:/path'``.
        pretrained: open_clip tag (``'openai'``, ``'webli'``: downloaded or read
            from the hub cache), a local weights file, or None for random weights.
        feature_layer: the block whose patch tokens the adapter reads,
            Python-style (``-2`` = second to last, LLaVA's ``mm_vision_select_layer``).
        dense_mode: how final-block tokens reach the joint space (a key of
            ``alignkit.labelers.DENSE_MODES``); None picks the tower's default
            (``'proj'`` for CLIP ViTs, ``'attn_pool_value'`` for SigLIP).
        frozen: no gradients into the tower and the tower kept in eval mode
            (stage 1 and LLaVA-1.5's stage 2). False lets it train (SEA-PRIME
            stage 2; give it its own lr with ``paramwise_cfg.custom_keys``).
        precision: open_clip precision of the tower's weights (``'fp32'``, ``'bf16'``, ...).
        init_empty: build on the meta device (shapes only; forward works on meta tensors).
        loaded: an already created open_clip model (``LoadedModel``); when given,
            ``model_name``/``pretrained`` must match it and nothing is loaded.

    Attributes:
        vision_dim (D), embed_dim (C), grid (H, W), num_patches (P),
        image_size (H, W) in pixels, preprocess_cfg (open_clip's mean/std/resize
        settings of the tower, for the dataset's image transform).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        feature_layer: int = -2,
        dense_mode: str | None = None,
        frozen: bool = True,
        precision: str = "fp32",
        init_empty: bool = False,
        loaded=None,
    ) -> None:
        super().__init__()
        check_bool("frozen", frozen)
        self.model_name = model_name
        self.pretrained = pretrained or None
        self.frozen = frozen
        self.loaded = None  # plain attribute: the full open_clip model must not become a submodule
        if loaded is not None:
            if loaded.model_name != model_name:
                raise ValueError(
                    f"loaded holds open_clip model {loaded.model_name!r}, but model_name={model_name!r}"
                )
            self.loaded = loaded
            visual = loaded.model.visual
        elif init_empty:
            import open_clip

            with torch.device("meta"):
                visual = open_clip.create_model(model_name, pretrained=None, device="meta").visual
        else:
            self.loaded = load_open_clip(model_name, pretrained, device="cpu", precision=precision)
            visual = self.loaded.model.visual
        self.tower = visual

        n = _num_blocks(visual)
        self.feature_layer = check_int(f"feature_layer (a block index of {model_name!r}, {n} blocks)", feature_layer,
                                       low=-n, high=n - 1)
        self.dense_mode = get_dense_mode(dense_mode or default_dense_mode(visual)).name
        get_dense_mode(self.dense_mode).check(visual)
        self.grid = tower_grid(visual)
        self.image_size = tower_image_size(visual)
        self.num_patches = self.grid[0] * self.grid[1]
        self.vision_dim = _tower_width(visual)
        self.embed_dim = self._probe_embed_dim()
        self.preprocess_cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
        self.tower.requires_grad_(not frozen)
        if frozen:
            self.tower.eval()
        # ZeRO-3: the tower reads some of its own parameters outside any forward (see models/zero3.py).
        register_params_read_outside_forward(self, self.tower)

    @torch.no_grad()
    def _probe_embed_dim(self) -> int:
        """C: push one image's worth of zero tokens through the dense head (cheap, exact for any tower)."""
        p = next(self.tower.parameters())
        tokens = torch.zeros(1, self.num_patches, self.vision_dim, device=p.device, dtype=p.dtype)
        return int(get_dense_mode(self.dense_mode)(self.tower, tokens).shape[-1])

    @property
    def transform(self):
        """open_clip's eval image transform for this tower (None for an ``init_empty`` tower)."""
        return None if self.loaded is None else self.loaded.transform

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.tower.eval()  # a frozen tower never switches dropout/batch statistics on
        return self

    def forward(self, images: Tensor) -> VisionOutput:
        """(B, 3, H, W) images, preprocessed with the tower's transform -> ``VisionOutput``."""
        dtype = next(self.tower.parameters()).dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feats, dense = forward_features(self.tower, images.to(dtype), (self.feature_layer,), self.dense_mode)
        return VisionOutput(feats[self.feature_layer], dense)  # (B, P, D), (B, P, C)

    def extra_repr(self) -> str:
        return (
            f"model_name={self.model_name!r}, pretrained={self.pretrained!r}, feature_layer={self.feature_layer}, "
            f"dense_mode={self.dense_mode!r}, grid={self.grid}, D={self.vision_dim}, C={self.embed_dim}, "
            f"frozen={self.frozen}"
        )
