"""SEA's align loss for a transformers ``LlavaForConditionalGeneration``, from the forward it already runs.

::

    from alignkit.integrations.transformers import LlavaSEA
    from alignkit.labelers import HFCLIPTopNLabeler

    sea = LlavaSEA(model, HFCLIPTopNLabeler('openai/clip-vit-large-patch14-336'), tokenizer)
    out = model(input_ids=..., pixel_values=..., labels=...)    # the usual LLaVA forward
    loss = out.loss + sea()['loss_align']                      # λ·L_align of the same images
    # optimise the projector and sea.parameters() (the loss temperature)

No second pass through the vision tower: forward hooks keep what the model's
own forward computes — the tower's ``last_hidden_state`` (transformers
computes it whatever hidden states LLaVA selects) and the projector's output
(the visual tokens, with their graph). ``sea()`` turns the last-layer tokens
into dense joint-space embeddings with the labeler's head
(:func:`alignkit.towers.transformers.dense_from_output`: CLIP's
``post_layernorm`` + ``visual_projection`` — which LLaVA's ``CLIPVisionModel``
does not hold —, SigLIP's pool head), labels them against the labeler's text
bank, samples pairs (SEA's preset: similarity-weighted, 2×2 window, dedup) and
returns :class:`~alignkit.models.SEAAligner`'s dict: ``loss_align`` (already
× λ) plus what to log (``align_*``, no key of which holds "loss").

Any model exposing a vision tower and a projector the way LLaVA does works:
it is found at ``model.model.vision_tower`` / ``model.model.multi_modal_projector``
(transformers >= 4.52) or ``model.vision_tower`` / ``model.multi_modal_projector``,
or passed as ``vision_tower=`` / ``projector=``. The labeler must hold the same
vision weights as the tower (checked once, at construction).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from alignkit.labelers.hf_base import HFTopNLabeler
from alignkit.losses import InfoNCELoss
from alignkit.models.sea_aligner import SEAAligner
from alignkit.samplers import DedupSampler, SimilarityWeightedSampler, WindowSampler
from alignkit.towers.transformers import (
    dense_from_output,
    model_kind,
    num_prefix_tokens,
    tower_grid,
    vision_config,
    vision_core,
)

STRATEGIES = ("default", "full")  # LLaVA's vision_feature_select_strategy: drop the class token, or keep it


def _find(model, paths: Sequence[str]):
    for path in paths:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.Module):
            return obj
    return None


def sea_preset_samplers() -> list:
    """The paper's sampler chain: one label per patch by score (Eq. 7), one patch per 2x2 window, one pair per word."""
    return [SimilarityWeightedSampler(), WindowSampler(window=2), DedupSampler()]


def _last_hidden(output) -> Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None and isinstance(output, (tuple, list)) and output:
        hidden = output[0]
    if not isinstance(hidden, Tensor):
        raise ValueError(f"the vision tower returned {type(output).__name__} without a last_hidden_state")
    return hidden


class LlavaSEA(nn.Module):
    """SEA's align loss for a LLaVA-style transformers model (module docstring).

    Args:
        model: a ``LlavaForConditionalGeneration`` (or any model with a CLIP /
            SigLIP vision tower and a projector found as LLaVA's are).
        labeler: an ``HFCLIPTopNLabeler`` / ``HFSigLIPTopNLabeler`` over the
            same vision weights as the tower (its text bank and dense head are used).
        tokenizer: the LLM's tokenizer, for the word table (Eq. 8), built once
            here from ``model.get_input_embeddings()`` — before any sharding.
        samplers, loss, loss_weight: as in ``SEAAligner``; defaults: the
            paper's sampler chain, ``InfoNCELoss(init_logit_scale=0.0)``, λ = 1.
        vision_tower, projector: the modules to hook, when the model does not
            expose them under LLaVA's names.
        select_strategy: ``'default'`` (the projector sees patch tokens only) or
            ``'full'`` (it also sees the class token, which gets no label);
            None reads ``model.config.vision_feature_select_strategy``.
        generator: the samplers' ``torch.Generator`` (None: torch's global RNG).
    """

    def __init__(
        self,
        model: nn.Module,
        labeler: HFTopNLabeler,
        tokenizer,
        samplers: Sequence | None = None,
        loss: nn.Module | dict | None = None,
        loss_weight: float = 1.0,
        vision_tower: nn.Module | None = None,
        projector: nn.Module | None = None,
        select_strategy: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(labeler, HFTopNLabeler):
            raise ValueError(
                f"labeler must be a transformers labeler (HFCLIPTopNLabeler / HFSigLIPTopNLabeler), "
                f"got {type(labeler).__name__}"
            )
        tower = vision_tower or _find(model, ("model.vision_tower", "vision_tower"))
        proj = projector or _find(model, ("model.multi_modal_projector", "multi_modal_projector"))
        if tower is None or proj is None:
            raise ValueError(
                f"{type(model).__name__} exposes no {'vision_tower' if tower is None else 'multi_modal_projector'} "
                "(looked at model.model.* and model.*); pass vision_tower= and projector="
            )
        kind = model_kind(tower)  # ValueError unless a transformers CLIP / SigLIP tower
        if kind != labeler.kind:
            raise ValueError(f"the model's vision tower is {kind!r} but the labeler is {labeler.kind!r}")
        self._check_same_tower(tower, labeler.model)
        strategy = select_strategy or getattr(getattr(model, "config", None), "vision_feature_select_strategy",
                                              "default")
        if strategy not in STRATEGIES:
            raise ValueError(f"select_strategy must be one of {STRATEGIES}, got {strategy!r}")
        prefix = num_prefix_tokens(tower)
        if strategy == "default" and prefix == 0:
            raise ValueError(
                "vision_feature_select_strategy='default' drops the first token, but this tower has no class "
                "token (SigLIP): the projector would miss a patch; use 'full'"
            )
        self.skip = prefix if strategy == "full" else 0  # tokens before the patches in the projector's output
        self.grid = tower_grid(tower)
        self.labeler = labeler
        self.generator = generator
        loss = InfoNCELoss(init_logit_scale=0.0) if loss is None else loss
        self.aligner = SEAAligner(labeler=labeler, samplers=list(sea_preset_samplers() if samplers is None
                                                                 else samplers), loss=loss, loss_weight=loss_weight)
        self.aligner.build_word_table(tokenizer, model.get_input_embeddings())
        self._hidden: Tensor | None = None
        self._visual: Tensor | None = None
        self._handles = [
            tower.register_forward_hook(self._keep_hidden),
            proj.register_forward_hook(self._keep_visual),
        ]

    @staticmethod
    def _check_same_tower(tower, labeler_model) -> None:
        a, b = vision_config(tower), vision_config(labeler_model)
        keys = ("hidden_size", "num_hidden_layers", "image_size", "patch_size")
        diff = {k: (getattr(a, k), getattr(b, k)) for k in keys if getattr(a, k) != getattr(b, k)}
        if diff:
            raise ValueError(
                "the labeler's vision tower differs from the model's: "
                + ", ".join(f"{k}: model {x!r}, labeler {y!r}" for k, (x, y) in diff.items())
            )
        # The dense head reads the model's last-layer tokens: the last layer must hold the same weights.
        mine = vision_core(tower).encoder.layers[-1].state_dict()
        theirs = vision_core(labeler_model).encoder.layers[-1].state_dict()
        for name, t in mine.items():
            if not torch.equal(t.detach().float().cpu(), theirs[name].detach().float().cpu()):
                raise ValueError(
                    f"the labeler's CLIP/SigLIP weights differ from the model's vision tower (last layer {name}); "
                    "load the labeler from the checkpoint the tower came from"
                )

    # ------------------------------------------------------------------ hooks
    def _keep_hidden(self, module, args, output) -> None:
        self._hidden = _last_hidden(output).detach()

    def _keep_visual(self, module, args, output) -> None:
        self._visual = output

    def remove(self) -> None:
        """Remove the hooks (the model runs as before)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ------------------------------------------------------------------ the loss
    def forward(self) -> dict[str, Tensor]:
        """The align loss of the images of the model's last forward (``SEAAligner``'s dict)."""
        if self._hidden is None or self._visual is None:
            raise ValueError(
                "no image forward was captured since the last call: run the model on a batch with pixel_values "
                "before calling the SEA loss"
            )
        hidden, visual = self._hidden, self._visual
        self._hidden = self._visual = None  # one loss per forward; never a stale batch
        head = self.labeler.model
        p = next(head.parameters())
        with torch.no_grad():
            dense = dense_from_output(head, hidden.to(p.device, p.dtype), self.labeler.dense_mode)  # (B, P, C)
        visual = visual[:, self.skip:]  # (B, skip + P, E) -> (B, P, E)
        if visual.dim() != 3 or visual.shape[:2] != dense.shape[:2]:
            raise ValueError(
                f"the projector returned {tuple(visual.shape)} visual tokens for {tuple(dense.shape[:2])} labelled "
                "patches; expected (B, P, E) (one token per patch, in grid order)"
            )
        self.aligner.to(visual.device)
        return self.aligner(visual, dense=dense, generator=self.generator)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, skip={self.skip}, labeler={self.labeler!r}"
