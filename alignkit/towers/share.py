"""One open_clip model for the vision encoder and the labeler: the labeler's config filled in from the encoder's.

The labeler labels the encoder's own dense output (one tower forward serves
both), so they must be the same model: a labeler config names no model of its
own, or the encoder's. Used wherever a labeler is built next to an encoder:
``LLaVAModel`` (the aligner's and ``align_eval``'s labelers) and the analysis
tools.
"""
from __future__ import annotations

from collections.abc import Mapping

TOWER_KEYS = ("model_name", "pretrained", "precision")


def share_tower(labeler_cfg: Mapping, encoder_cfg: Mapping, name: str = "aligner.labeler") -> dict:
    """``labeler_cfg`` with the encoder's model (``model_name``, ``pretrained``, ``precision``) filled in.

    ``dense_mode`` is filled in too when the encoder names one. A tower key the
    labeler sets to another value than the encoder is a ``ValueError`` naming
    both (``name`` is how the labeler config is called in the message). A
    wrapper around an encoder (``MultiScaleVisionEncoder``) names its tower in
    ``encoder``, a wrapper around a labeler (``MultiScaleLabeler``) in
    ``labeler``: those are the configs shared.
    """
    labeler_cfg = dict(labeler_cfg)
    if isinstance(labeler_cfg.get("labeler"), Mapping):
        labeler_cfg["labeler"] = share_tower(labeler_cfg["labeler"], encoder_cfg, name=f"{name}.labeler")
        return labeler_cfg
    if isinstance(encoder_cfg.get("encoder"), Mapping):
        encoder_cfg = encoder_cfg["encoder"]
    for key in TOWER_KEYS:
        if key in encoder_cfg:
            mine = labeler_cfg.setdefault(key, encoder_cfg[key])
            if mine != encoder_cfg[key]:
                raise ValueError(
                    f"{name}.{key}={mine!r} differs from vision_encoder.{key}={encoder_cfg[key]!r}; "
                    "the labeler labels the encoder's own dense output, so they must be the same model "
                    "(leave it out of the labeler config)"
                )
    if encoder_cfg.get("dense_mode") is not None:
        labeler_cfg.setdefault("dense_mode", encoder_cfg["dense_mode"])
    return labeler_cfg
