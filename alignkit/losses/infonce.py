"""InfoNCELoss: SEA's align loss (Eq. 9), symmetric InfoNCE with a learnable temperature."""

import math

from torch import Tensor

from alignkit.losses.base import BaseAlignLoss
from alignkit.losses.functional import ChunkSize, autocast_off, info_nce
from alignkit.registry import ALIGN_LOSSES


@ALIGN_LOSSES.register_module()
class InfoNCELoss(BaseAlignLoss):
    """Symmetric InfoNCE on L2-normalised pairs, SEA Eq. 9:

    ``L = −1/(2N) Σ_i [log softmax_j(s·cos(x_i, t_j))_i + log softmax_j(s·cos(t_i, x_j))_i]``

    with s = exp(``logit_scale``) = 1/τ. Row i of ``visual`` and of ``text`` form
    the positive pair; every other row of the batch is a negative.

    The temperature, a paper decision: SEA says "τ = 0", which read literally
    divides by zero. The preset is a learnable ln s initialised at 0.0, i.e.
    τ₀ = 1 (the reading "the log-temperature starts at 0"), clamped at ln 100
    (τ ≥ 0.01) as in CLIP. CLIP's own initialisation is one argument away:
    ``init_logit_scale=math.log(1 / 0.07)``.

    Args:
        init_logit_scale: initial ln s. 0.0 = the SEA preset (τ₀ = 1).
        max_logit_scale: cap on the ln s used in forward (ln 100 by default; None: no cap).
        learnable: False freezes the temperature (a buffer, not a parameter).
        chunk_size: None = full N×N logits; an int = row blocks of that height,
            O(chunk·N) memory, same value and gradients; 'auto' = blocks of
            ~2**26 logits when N is large.
        eps: rows are divided by ``max(‖row‖, eps)``, so zero rows stay finite.

    Forward: ``visual (N, E), text (N, E) -> 0-dim`` fp32 (float64 for float64
    inputs), computed with autocast off. N = 0 gives a zero with a graph; N = 1
    gives log 1 = 0. Inputs are never modified.

    Config: ``dict(type='InfoNCELoss', init_logit_scale=0.0, chunk_size=None)``.
    """

    def __init__(
        self,
        init_logit_scale: float = 0.0,
        max_logit_scale: float | None = math.log(100),
        learnable: bool = True,
        chunk_size: ChunkSize = None,
        eps: float = 1e-6,
    ):
        super().__init__(init_logit_scale, max_logit_scale, learnable, chunk_size, eps)

    def forward(self, visual: Tensor, text: Tensor) -> Tensor:
        with autocast_off(visual.device.type if isinstance(visual, Tensor) else "cpu"):
            return info_nce(visual, text, self.scale(), chunk_size=self.chunk_size, eps=self.eps)
