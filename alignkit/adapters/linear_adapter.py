"""``LinearAdapter``: one linear map from the vision width to the LLM width (LLaVA's ``linear`` projector)."""
from __future__ import annotations

from torch import Tensor, nn

from alignkit.adapters.base import BaseAdapter
from alignkit.registry import ADAPTERS


@ADAPTERS.register_module()
class LinearAdapter(BaseAdapter):
    """``y = x Wᵀ + b``, the adapter of the first LLaVA.

    LLaVA equivalent: ``mm_projector_type='linear'``, a bare ``nn.Linear`` whose
    keys are ``weight`` and ``bias``; here the layer is ``self.proj``, so
    ``proj.weight`` ↔ ``weight`` (see ``to_llava_state_dict``).

    Args:
        vision_dim: D.
        llm_dim: E.
        bias: add a learnable bias (LLaVA has one).
    """

    def __init__(self, vision_dim: int, llm_dim: int, bias: bool = True) -> None:
        super().__init__(vision_dim, llm_dim)
        self.proj = nn.Linear(self.vision_dim, self.llm_dim, bias=bias)

    @property
    def llava_projector_type(self) -> str | None:
        # LLaVA's linear projector always has a bias.
        return "linear" if self.proj.bias is not None else None

    def _llava_module(self) -> nn.Module:
        return self.proj

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.proj(x)  # (..., D) -> (..., E)
