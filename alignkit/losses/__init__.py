"""Align losses: ``forward(visual (N, E), text (N, E)) -> scalar`` modules around pure functions.

Importing this package registers every loss in ``alignkit.registry.ALIGN_LOSSES``
(``dict(type='InfoNCELoss')`` finds it lazily). The math lives in
:mod:`alignkit.losses.functional` for use without any module.
"""

from alignkit.losses.base import BaseAlignLoss
from alignkit.losses.functional import info_nce, l2_normalize, sigmoid_pairwise
from alignkit.losses.infonce import InfoNCELoss
from alignkit.losses.sigmoid import SigmoidLoss

__all__ = ["BaseAlignLoss", "InfoNCELoss", "SigmoidLoss", "info_nce", "l2_normalize", "sigmoid_pairwise"]
