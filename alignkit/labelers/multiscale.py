"""``MultiScaleLabeler``: the labels of an S² model's images, from the images S² takes.

An S² model (:class:`~alignkit.models.MultiScaleVisionEncoder`) takes its images
at the largest scale (1008 px for LLaVA's 336/672/1008) and labels the base
scale: the image resized (bicubic, as S² resizes) to the tower's own size and
seen whole (why: ``docs/design.md``, "S²"). This labeler wraps a top-n labeler
of the same tower and does exactly that, so:

- ``transform`` is the tower's preprocessing at the largest scale (what the S²
  configs' datasets produce), ``encode_patches`` takes those images, resizes
  them to the base scale and runs the wrapped labeler's tower; ``label`` is the
  wrapped labeler's (same grid, same text bank);
- ``fingerprint()`` records the scales and the largest scale's transform, so a
  label cache written by ``tools/extract_labels.py`` with this labeler is
  accepted by an S² config whose aligner uses it, and refused by a plain
  CLIP-L/336 config (and the other way round).

Everything else (``loaded``, ``dense_mode``, ``words``, ``top_n``, ``embed_dim``,
``device``...) is the wrapped labeler's.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from alignkit.labelers.base import BaseLabeler
from alignkit.registry import LABELERS
from alignkit.structures import PatchLabels
from alignkit.towers.multiscale import INTERPOLATION, check_input, check_scales, resize, square_side, transform_at


@LABELERS.register_module()
class MultiScaleLabeler(BaseLabeler):
    """Labels of the base scale of S² images (module docstring).

    Args:
        labeler: the wrapped labeler's config (``HFCLIPTopNLabeler``,
            ``CLIPTopNLabeler``, ...) or the built labeler; its tower's input
            size is the base scale.
        scales: the S² encoder's scales, ascending (``(336, 672, 1008)``);
            images arrive at the largest.
        device: the wrapped labeler's device (set by the tools, e.g.
            ``tools/extract_labels.py``); None leaves its config's.
    """

    def __init__(self, labeler: dict | BaseLabeler, scales: Sequence[int] = (336, 672, 1008),
                 device: str | None = None) -> None:
        if isinstance(labeler, dict):
            labeler = LABELERS.build(labeler if device is None else dict(labeler, device=device))
        elif device is not None:
            raise ValueError("device applies to a labeler config, not to a built labeler")
        if not isinstance(labeler, BaseLabeler):
            raise ValueError(f"labeler must be a labeler config (dict) or labeler, got {type(labeler).__name__}")
        if isinstance(labeler, MultiScaleLabeler):
            raise ValueError("MultiScaleLabeler cannot wrap another MultiScaleLabeler")
        self.labeler = labeler
        self.base = square_side("the wrapped labeler's image_size", labeler.image_size)
        self.scales = check_scales(scales, self.base)
        self.image_size = (self.scales[-1], self.scales[-1])
        self.grid = labeler.grid
        self.word_list = labeler.word_list
        self.backend = labeler.backend
        visual = getattr(labeler, "visual", None)  # open_clip labelers: the preprocess config lives on the tower
        self.transform, self._transform_description = transform_at(
            labeler.transform, getattr(visual, "preprocess_cfg", None), self.scales[-1]
        )

    def __getattr__(self, name: str):
        # Only called for names this object lacks: the wrapped labeler's (loaded, dense_mode, top_n, ...).
        if name == "labeler":  # not set yet (unpickling, a failed __init__): no recursion
            raise AttributeError(name)
        return getattr(self.labeler, name)

    def encode_patches(self, images: Tensor) -> Tensor:
        """(B, 3, S_max, S_max) images preprocessed with ``transform`` -> (B, P, C) of the base scale."""
        check_input(images, self.scales[-1])
        return self.labeler.encode_patches(resize(images, self.base))

    def label(self, dense: Tensor) -> PatchLabels:
        return self.labeler.label(dense)

    def fingerprint(self) -> dict:
        inner = self.labeler.fingerprint()
        return {
            **inner,
            "labeler": type(self).__name__,
            "wrapped_labeler": inner["labeler"],
            "scales": list(self.scales),
            "labels_from": f"base scale {self.base} px, resized {INTERPOLATION} from {self.scales[-1]} px",
            "image_size": list(self.image_size),
            "transform": self._transform_description,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scales={self.scales}, labeler={self.labeler!r})"
