"""``HFVisionEncoder``: a Hugging Face transformers CLIP / SigLIP tower as an MLLM's vision encoder.

The transformers twin of :class:`~alignkit.models.vision_encoder.OpenCLIPVisionEncoder`,
same interface and outputs (``VisionOutput(features (B, P, D), dense (B, P, C))``
from one forward, :func:`alignkit.towers.transformers.forward_features`):
features are LLaVA's ``CLIPVisionTower.feature_select`` (``hidden_states[-2]``,
class token dropped), so a config on this encoder reproduces LLaVA-1.5's
vision pipeline with the same classes LLaVA loads.

The tower can come from three places:

- ``loaded``: a :class:`~alignkit.towers.transformers_loader.LoadedTransformersModel`
  someone already created — ``LLaVAModel`` passes the aligner's labeler's
  model here so the process holds one copy of the tower;
- ``model_name``: a hub name or ``save_pretrained`` folder, loaded with
  ``load_transformers_model`` (vision side only when no labeler shares it);
- ``init_empty=True``: created on the ``meta`` device from ``config`` (the
  dims written in the config file, no download); for checking a config's shapes.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from alignkit.models.vision_encoder import VisionOutput
from alignkit.registry import MODELS
from alignkit.towers.transformers import (
    default_dense_mode,
    forward_features,
    get_dense_mode,
    joint_dim,
    model_kind,
    num_blocks,
    tower_grid,
    tower_image_size,
    tower_width,
    vision_config,
    vision_only,
)
from alignkit.towers.transformers_loader import PRECISIONS, LoadedTransformersModel, load_transformers_model
from alignkit.utils.validate import check_bool


def _empty_model(config: dict):
    """A CLIPModel / SiglipModel on the meta device from the dims in a config file."""
    from transformers import AutoConfig, AutoModel

    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type not in ("clip", "siglip"):
        raise ValueError(f"vision_encoder.config must name model_type 'clip' or 'siglip', got {model_type!r}")
    with torch.device("meta"):
        return AutoModel.from_config(AutoConfig.for_model(model_type, **config))


@MODELS.register_module()
class HFVisionEncoder(nn.Module):
    """A transformers CLIP/SigLIP tower: ``forward(images) -> VisionOutput(features (B, P, D), dense (B, P, C))``.

    Args:
        model_name: hub name (``'openai/clip-vit-large-patch14-336'``) or a
            ``save_pretrained`` folder of a ``CLIPModel`` / ``SiglipModel``.
        feature_layer: the encoder layer whose patch tokens the adapter reads,
            Python-style (``-2``: LLaVA's ``mm_vision_select_layer``).
        dense_mode: a key of ``alignkit.towers.transformers.DENSE_MODES``; None
            picks the tower's default (``'proj'`` for CLIP, ``'attn_pool_value'`` for SigLIP).
        frozen: no gradients into the tower and the tower kept in eval mode.
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` weights.
        init_empty: build on the meta device from ``config`` (shapes only).
        config: the model's dims (``dict(model_type='clip', vision_config=dict(...), projection_dim=...)``),
            needed by ``init_empty``; checked against a loaded model otherwise.
        loaded: an already loaded model (``LoadedTransformersModel``); when given,
            ``model_name`` must match it and nothing is loaded.

    Attributes:
        vision_dim (D), embed_dim (C), grid (H, W), num_patches (P), image_size (H, W).
    """

    def __init__(
        self,
        model_name: str,
        feature_layer: int = -2,
        dense_mode: str | None = None,
        frozen: bool = True,
        precision: str = "fp32",
        init_empty: bool = False,
        config: dict | None = None,
        loaded: LoadedTransformersModel | None = None,
    ) -> None:
        super().__init__()
        check_bool("frozen", frozen)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}")
        self.model_name = model_name
        self.frozen = frozen
        self.loaded = None  # plain attribute: the text tower must not become a submodule
        if loaded is not None:
            if loaded.model_name != model_name:
                raise ValueError(f"loaded holds transformers model {loaded.model_name!r}, but model_name={model_name!r}")
            self.loaded = loaded
            model = vision_only(loaded.model)
        elif init_empty:
            if config is None:
                raise ValueError("init_empty=True needs vision_encoder.config (the model's dims; no download)")
            model = vision_only(_empty_model(config))
        else:
            self.loaded = load_transformers_model(model_name, precision=precision, with_text=False)
            model = self.loaded.model
        if config is not None and not init_empty:
            self._check_config(config, model)
        # The vision side only (sharing the loaded modules): the text tower stays out of checkpoints.
        self.tower = model

        n = num_blocks(model)
        if isinstance(feature_layer, bool) or not isinstance(feature_layer, int) or not -n <= feature_layer < n:
            raise ValueError(
                f"feature_layer must be a layer index in -{n}..{n - 1} for {model_name!r} ({n} layers), "
                f"got {feature_layer!r}"
            )
        self.feature_layer = feature_layer
        self.dense_mode = get_dense_mode(dense_mode or default_dense_mode(model)).name
        get_dense_mode(self.dense_mode).check(model)
        self.grid = tower_grid(model)
        self.image_size = tower_image_size(model)
        self.num_patches = self.grid[0] * self.grid[1]
        self.vision_dim = tower_width(model)
        self.embed_dim = joint_dim(model)
        self.tower.requires_grad_(not frozen)
        if frozen:
            self.tower.eval()

    @staticmethod
    def _check_config(config: dict, model) -> None:
        """Each dim the config file states must be the loaded model's (fails at build, not at step one)."""
        vision = vision_config(model).to_dict()
        wrong = []
        for key, want in config.items():
            if key == "vision_config":
                wrong += [(f"vision_config.{k}", v, vision.get(k)) for k, v in want.items() if vision.get(k) != v]
            elif key == "model_type":
                if model_kind(model) != want:
                    wrong.append((key, want, model_kind(model)))
            elif key == "projection_dim":
                if joint_dim(model) != want:
                    wrong.append((key, want, joint_dim(model)))
        if wrong:
            raise ValueError(
                "vision_encoder.config disagrees with the loaded model: "
                + ", ".join(f"{k}: config says {a!r}, model has {b!r}" for k, a, b in wrong)
            )

    @property
    def transform(self):
        """The tower's ``HFImageProcessor`` (None for an ``init_empty`` tower)."""
        return None if self.loaded is None else self.loaded.image_processor

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.tower.eval()  # a frozen tower never switches dropout on
        return self

    def forward(self, images: Tensor) -> VisionOutput:
        """(B, 3, H, W) images, preprocessed with the tower's processor -> ``VisionOutput``."""
        dtype = next(self.tower.parameters()).dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feats, dense = forward_features(self.tower, images.to(dtype), (self.feature_layer,), self.dense_mode)
        return VisionOutput(feats[self.feature_layer], dense)  # (B, P, D), (B, P, C)

    def extra_repr(self) -> str:
        return (
            f"backend='transformers', model_name={self.model_name!r}, feature_layer={self.feature_layer}, "
            f"dense_mode={self.dense_mode!r}, grid={self.grid}, D={self.vision_dim}, C={self.embed_dim}, "
            f"frozen={self.frozen}"
        )
