"""``MLPAdapter``: Linear layers with an activation between them (LLaVA-1.5's ``mlp2x_gelu`` by default)."""
from __future__ import annotations

import inspect

from torch import Tensor, nn
from torch.nn.modules import activation as _activation

from alignkit.adapters.base import BaseAdapter
from alignkit.registry import ADAPTERS
from alignkit.utils.validate import check_int

# torch.nn activations that act elementwise and keep the width, so any can sit
# between two Linear layers. Excluded: those that change the width (GLU), need
# extra constructor arguments (Threshold) or are not activations (attention,
# the softmax family).
_NOT_ELEMENTWISE = {"GLU", "Threshold", "MultiheadAttention", "Softmax", "Softmin", "Softmax2d", "LogSoftmax"}
ACTIVATIONS = tuple(
    sorted(
        name
        for name in _activation.__all__
        if name not in _NOT_ELEMENTWISE
        and inspect.isclass(getattr(nn, name, None))
        and issubclass(getattr(nn, name), nn.Module)
    )
)


def _make_activation(act: str, act_kwargs: dict | None) -> nn.Module:
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ValueError(f"act must name a torch.nn activation, one of {list(ACTIVATIONS)}, got {act!r}")
    try:
        return getattr(nn, act)(**(act_kwargs or {}))
    except TypeError as err:
        raise ValueError(f"act_kwargs {act_kwargs!r} are not valid for nn.{act}: {err}") from None


@ADAPTERS.register_module()
class MLPAdapter(BaseAdapter):
    """``depth`` Linear layers with the activation ``act`` between them.

    Widths: D → H → ... → H → E with H = ``hidden_dim`` (default E, as in LLaVA);
    ``depth=1`` is a single Linear(D, E). The default, ``depth=2, act='GELU'``, is
    LLaVA-1.5's ``mlp2x_gelu``: Linear(D, E) → GELU → Linear(E, E).

    The layers sit in ``self.layers``, an ``nn.Sequential`` laid out exactly like
    LLaVA's (Linear at even indices, activation at odd ones), so the state-dict
    keys map by dropping the ``layers.`` prefix: ``layers.0.weight`` ↔
    ``0.weight``, ``layers.2.bias`` ↔ ``2.bias`` (``model.mm_projector.0.weight``
    in ``mm_projector.bin``); see ``to_llava_state_dict`` / ``from_llava_state_dict``.

    Args:
        vision_dim: D.
        llm_dim: E.
        depth: number of Linear layers, >= 1.
        act: name of a ``torch.nn`` activation class ('GELU', 'ReLU', 'SiLU', ...;
            ``ACTIVATIONS`` lists them).
        hidden_dim: H, the width between layers; None means ``llm_dim``.
        act_kwargs: keyword arguments for the activation, e.g. ``dict(approximate='tanh')``.
    """

    def __init__(
        self,
        vision_dim: int,
        llm_dim: int,
        depth: int = 2,
        act: str = "GELU",
        hidden_dim: int | None = None,
        act_kwargs: dict | None = None,
    ) -> None:
        super().__init__(vision_dim, llm_dim)
        check_int("depth", depth, low=1)  # the number of Linear layers
        if hidden_dim is not None:
            check_int("hidden_dim (None = llm_dim)", hidden_dim, low=1)
        _make_activation(act, act_kwargs)  # validate even when depth == 1 uses none
        self.depth = depth
        self.act = act
        self.act_kwargs = dict(act_kwargs or {})
        self.hidden_dim = self.llm_dim if hidden_dim is None else hidden_dim

        widths = [self.vision_dim] + [self.hidden_dim] * (depth - 1) + [self.llm_dim]
        layers: list[nn.Module] = []
        for i in range(depth):
            if i > 0:
                layers.append(_make_activation(act, act_kwargs))
            layers.append(nn.Linear(widths[i], widths[i + 1]))
        self.layers = nn.Sequential(*layers)

    @property
    def llava_projector_type(self) -> str | None:
        # LLaVA's mlp<N>x_gelu: exact GELU, hidden width = llm_dim.
        gelu_exact = self.act == "GELU" and self.act_kwargs.get("approximate", "none") == "none"
        if self.depth > 1 and not (gelu_exact and self.hidden_dim == self.llm_dim):
            return None
        return f"mlp{self.depth}x_gelu"

    def _llava_module(self) -> nn.Module:
        return self.layers

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, depth={self.depth}, act={self.act!r}, hidden_dim={self.hidden_dim}"

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.layers(x)  # (..., D) -> (..., H) -> ... -> (..., E)
