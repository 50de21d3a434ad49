"""The base of the align losses: a learnable, clamped log logit-scale and the shared contract.

An align loss is an ``nn.Module`` with ``forward(visual: (N, E), text: (N, E)) -> scalar``
around a pure function of :mod:`alignkit.losses.functional`. It owns its
temperature: a scalar ``logit_scale`` = ln s = ln(1/τ), an ``nn.Parameter`` when
``learnable`` and a buffer otherwise (so it is saved with the stage-1 artifact
either way, but never handed to an optimizer when frozen).
"""

import math

import torch
from torch import Tensor, nn

from alignkit.losses.functional import ChunkSize, check_chunk_size
from alignkit.utils.validate import check_bool


def _finite_float(name: str, value, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite float, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite float, got {value!r}")
    return value


def _at_least_fp32(x: Tensor) -> Tensor:
    # A module cast to bf16 (DeepSpeed does) still exponentiates in fp32; .double() keeps float64.
    return x.to(torch.promote_types(x.dtype, torch.float32))


class BaseAlignLoss(nn.Module):
    """Holds ``logit_scale`` (and any other learnable scalar) and the clamp.

    Args:
        init_logit_scale: initial ln s.
        max_logit_scale: the value used in forward is ``min(logit_scale, max_logit_scale)``
            (None: no cap). Like CLIP's cap at ln 100 it keeps s ≤ 100; unlike
            CLIP, which clamps the parameter in place after each step, the
            forward clamps the value it uses, so no training loop has to know.
            Above the cap the loss passes no gradient to ``logit_scale``.
        learnable: False stores the scalars as buffers (no gradient, not in ``parameters()``).
        chunk_size: None, a positive int or 'auto' (see :mod:`alignkit.losses.functional`).
        eps: normalisation floor for the rows.
    """

    def __init__(
        self,
        init_logit_scale: float,
        max_logit_scale: float | None,
        learnable: bool = True,
        chunk_size: ChunkSize = None,
        eps: float = 1e-6,
    ):
        super().__init__()
        init_logit_scale = _finite_float("init_logit_scale", init_logit_scale)
        self.max_logit_scale = _finite_float("max_logit_scale", max_logit_scale, allow_none=True)
        self.learnable = check_bool("learnable", learnable)
        self.chunk_size = check_chunk_size(chunk_size)
        self.eps = _finite_float("eps", eps)
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self._add_scalar("logit_scale", init_logit_scale)

    def _add_scalar(self, name: str, value: float) -> None:
        tensor = torch.tensor(value, dtype=torch.float32)
        if self.learnable:
            self.register_parameter(name, nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)

    def clamped_logit_scale(self) -> Tensor:
        """ln s as used in forward: ``logit_scale`` capped at ``max_logit_scale``, in >= fp32."""
        logit_scale = _at_least_fp32(self.logit_scale)
        if self.max_logit_scale is not None:
            logit_scale = logit_scale.clamp(max=self.max_logit_scale)
        return logit_scale

    def scale(self) -> Tensor:
        """s = exp(clamped ln s) = 1/τ, a 0-dim (>= fp32) tensor that carries the graph."""
        return self.clamped_logit_scale().exp()

    @property
    def logit_scale_value(self) -> float:
        """The clamped ln s used in forward, as a float (for logging)."""
        return float(self.clamped_logit_scale().detach())

    @property
    def temperature(self) -> float:
        """τ = 1/s = exp(−clamped ln s), as a float (for logging); inf once ln s < −709 (a diverged temperature).

        Logging must not raise: ``math.exp`` overflows there, and a NaN ln s gives NaN. The
        loss's own finite checks name a scale that the forward cannot use.
        """
        try:
            return math.exp(-self.logit_scale_value)
        except OverflowError:
            return math.inf

    def extra_repr(self) -> str:
        return (
            f"logit_scale={self.logit_scale_value:.4g} (tau={self.temperature:.4g}), "
            f"max_logit_scale={self.max_logit_scale}, learnable={self.learnable}, "
            f"chunk_size={self.chunk_size!r}"
        )
