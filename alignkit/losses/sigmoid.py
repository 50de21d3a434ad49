"""SigmoidLoss: SigLIP's pairwise sigmoid loss with a learnable scale and bias."""

import math

from torch import Tensor

from alignkit.losses.base import BaseAlignLoss, _at_least_fp32, _finite_float
from alignkit.losses.functional import ChunkSize, autocast_off, sigmoid_pairwise
from alignkit.registry import ALIGN_LOSSES


@ALIGN_LOSSES.register_module()
class SigmoidLoss(BaseAlignLoss):
    """SigLIP's pairwise sigmoid loss on L2-normalised pairs:

    ``logit_ij = s·cos(x_i, t_j) + b``, ``L = −(1/N) Σ_ij log σ(y_ij · logit_ij)``,
    y = +1 on the diagonal (the N pairs), −1 off it. Normalised by N, the batch
    size, as in the SigLIP paper and open_clip. Each pair is its own binary
    problem, so no softmax over the batch couples them (an alternative to
    InfoNCE, not the paper's choice).

    Args:
        init_logit_scale: initial ln s; SigLIP's ln 10.
        init_logit_bias: initial b; SigLIP's −10, which starts the N² − N
            negatives near σ(−10) so the first steps are not swamped by them.
        learnable: False freezes scale and bias (buffers, not parameters).
        max_logit_scale: cap on the ln s used in forward (ln 100; None: no cap,
            as in SigLIP).
        chunk_size, eps: as in :class:`InfoNCELoss`.

    Forward: ``visual (N, E), text (N, E) -> 0-dim`` fp32, autocast off; N = 0
    gives a zero with a graph. Inputs are never modified.

    Config: ``dict(type='SigmoidLoss', init_logit_scale=math.log(10), init_logit_bias=-10.0)``.
    """

    def __init__(
        self,
        init_logit_scale: float = math.log(10),
        init_logit_bias: float = -10.0,
        learnable: bool = True,
        max_logit_scale: float | None = math.log(100),
        chunk_size: ChunkSize = None,
        eps: float = 1e-6,
    ):
        super().__init__(init_logit_scale, max_logit_scale, learnable, chunk_size, eps)
        self._add_scalar("logit_bias", _finite_float("init_logit_bias", init_logit_bias))

    @property
    def logit_bias_value(self) -> float:
        """The bias b, as a float (for logging)."""
        return float(self.logit_bias.detach())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, logit_bias={self.logit_bias_value:.4g}"

    def forward(self, visual: Tensor, text: Tensor) -> Tensor:
        with autocast_off(visual.device.type if isinstance(visual, Tensor) else "cpu"):
            return sigmoid_pairwise(
                visual, text, self.scale(), _at_least_fp32(self.logit_bias), chunk_size=self.chunk_size, eps=self.eps
            )
