"""``MultiScaleVisionEncoder``: S² (Scaling on Scales) around any alignkit vision encoder.

Shi et al. 2024, "When Do We Not Need Larger Vision Models?", as LLaVA runs it
(``s2wrapper.forward(tower, images, img_sizes=[336, 672, 1008], max_split_size=336)``;
the SEA paper's "S²-Wrapper CLIP-L 1008" rows, Table 2):

    image at the largest scale S_max (1008)
      for each scale S = k · S_base (336, 672, 1008; k = 1, 2, 3):
        resize to S × S (bicubic, as s2wrapper does; the largest scale is the image itself)
        split into k × k crops of S_base × S_base, row by row
        every crop through the SAME tower -> layer −2 patch features (H, W, D) per crop
        crops merged back into one (k·H) × (k·W) map, average-pooled k × k -> (H, W, D)
      concatenate the scales along channels -> features (B, P, n_scales · D)

P is the tower's own (576 for CLIP-L/336): the LLM sees as many visual tokens
as without S², and the adapter reads ``vision_dim = n_scales · D`` (3 × 1024 =
3072, LLaVA's ``mm_hidden_size``). The scales' channels come in ascending
scale order (base first), as s2wrapper concatenates them.

``dense`` (what the labeler scores, SEA's patch labels) is the base scale's
dense joint-space embeddings: the image resized to S_base and seen whole by
the tower, on the same H × W grid as the visual tokens. That is exactly the
input CLIP was trained on (one whole image at its native resolution), so a
label means what it means for CLIP-L/336: the patch's final-layer embedding
scored against the word list's text embeddings. The larger scales' crops are
not used for labels: a crop's final layer has seen a quarter or a ninth of
the image (out of the distribution CLIP's text tower was aligned with), and
averaging L2-normalised joint-space vectors across crops and scales is not an
embedding CLIP ever produced. Every visual token (which carries all scales)
is supervised by the label of the base-scale patch at the same grid
position, which covers the same region of the photo. A label cache for these
labels comes from :class:`~alignkit.labelers.MultiScaleLabeler` (the same
resize of the same 1008-px images).

All crops of all scales go through the tower in one batch
((1 + 4 + 9) · B images for 336/672/1008): one forward, as the encoder
contract asks (``docs/design.md``).

Everything else of the encoder contract is the wrapped encoder's: ``grid``,
``num_patches``, ``dense_mode``, ``embed_dim``, ``feature_layer``, ``tower``,
``loaded`` (the tower shared with the labeler), ``frozen``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from alignkit.models.vision_encoder import VisionOutput
from alignkit.registry import MODELS
from alignkit.towers.multiscale import (
    check_input,
    check_scales,
    merge_pool,
    resize,
    split_crops,
    square_side,
    transform_at,
)


@MODELS.register_module()
class MultiScaleVisionEncoder(nn.Module):
    """S² around a vision encoder: ``forward(images (B, 3, S_max, S_max)) -> VisionOutput``.

    ``features`` (B, P, n·D) for the adapter, ``dense`` (B, P, C) of the base scale for the labeler.

    Args:
        encoder: the wrapped encoder's config (``OpenCLIPVisionEncoder``,
            ``HFVisionEncoder``) or the built module. Its tower's input size is
            the base scale and the crop size.
        scales: image sizes in pixels, ascending, each a multiple of the base;
            LLaVA's S² preset ``(336, 672, 1008)``. Images arrive at the largest.
        init_empty: build the wrapped encoder on the meta device (shape checks).
        loaded: an already loaded model for the wrapped encoder (``LLaVAModel``
            passes its labeler's here so the process holds one tower).

    Attributes:
        scales, splits (k per scale), vision_dim (n · D), image_size (S_max, S_max),
        and the wrapped encoder's grid (H, W), num_patches (P), embed_dim (C),
        dense_mode, feature_layer, tower, loaded, frozen.
    """

    def __init__(
        self,
        encoder: dict | nn.Module,
        scales: Sequence[int] = (336, 672, 1008),
        init_empty: bool = False,
        loaded=None,
    ) -> None:
        super().__init__()
        if isinstance(encoder, nn.Module):
            if init_empty or loaded is not None:
                raise ValueError("init_empty / loaded apply to an encoder config, not to a built encoder")
        elif isinstance(encoder, dict):
            encoder = dict(encoder)
            if loaded is not None:
                encoder["loaded"] = loaded
            if init_empty:
                encoder["init_empty"] = True
            encoder = MODELS.build(encoder)
        else:
            raise ValueError(f"encoder must be a vision encoder config (dict) or module, got {type(encoder).__name__}")
        if isinstance(encoder, MultiScaleVisionEncoder):
            raise ValueError("MultiScaleVisionEncoder cannot wrap another MultiScaleVisionEncoder")
        self.encoder = encoder
        base = square_side("the wrapped encoder's image_size", encoder.image_size)
        self.scales = check_scales(scales, base)
        self.splits = tuple(s // base for s in self.scales)
        self.grid = tuple(encoder.grid)
        self.num_patches = encoder.num_patches
        self.vision_dim = len(self.scales) * encoder.vision_dim
        self.embed_dim = encoder.embed_dim
        self.dense_mode = encoder.dense_mode
        self.feature_layer = encoder.feature_layer
        self.image_size = (self.scales[-1], self.scales[-1])
        self._transform = None

    # The wrapped encoder owns the tower and whether it trains: one place, read and written through.
    @property
    def tower(self) -> nn.Module:
        return self.encoder.tower

    @property
    def loaded(self):
        return self.encoder.loaded

    @property
    def frozen(self) -> bool:
        return self.encoder.frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        self.encoder.frozen = value

    @property
    def model_name(self) -> str:
        return self.encoder.model_name

    @property
    def transform(self):
        """The wrapped encoder's image preprocessing at the largest scale (None for an ``init_empty`` encoder).

        As LLaVA's S² tower does: the same resize / centre crop / normalisation, sized ``S_max``.
        """
        if self._transform is None and self.encoder.transform is not None:  # built once, on first use
            pre = getattr(self.encoder, "preprocess_cfg", None)
            self._transform = transform_at(self.encoder.transform, pre, self.scales[-1])[0]
        return self._transform

    def forward(self, images: Tensor) -> VisionOutput:
        """(B, 3, S_max, S_max) preprocessed images -> ``VisionOutput`` (features (B, P, n·D), dense (B, P, C))."""
        check_input(images, self.scales[-1])
        b = images.shape[0]
        # One batch through the tower: [base images | 2x2 crops | 3x3 crops | ...].
        crops = [split_crops(resize(images, s), k) for s, k in zip(self.scales, self.splits)]
        features, dense = self.encoder(torch.cat(crops))  # (sum k² · B, P, D), (sum k² · B, P, C)
        per_scale = features.split([k * k * b for k in self.splits])
        merged = [merge_pool(f, k, self.grid) for f, k in zip(per_scale, self.splits)]  # each (B, P, D)
        return VisionOutput(torch.cat(merged, dim=-1), dense[:b])  # (B, P, n·D), base-scale (B, P, C)

    def extra_repr(self) -> str:
        return f"scales={self.scales}, grid={self.grid}, D={self.vision_dim}, C={self.embed_dim}"
