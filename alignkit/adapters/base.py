"""The adapter contract: ``(..., D) -> (..., E)``, leading dims untouched, rows never mixed.

An adapter (LLaVA's "projector") maps the vision encoder's patch features
(width D = ``vision_dim``) to visual tokens in the LLM's embedding space
(width E = ``llm_dim``). It acts on the last dimension only, so ``(B, P, D)``,
``(N, D)`` or ``(B, T, P, D)`` inputs all work and token i of the output depends on
token i of the input alone. The model injects both widths when it builds one:
``ADAPTERS.build(cfg, default_args=dict(vision_dim=D, llm_dim=E))``.

``BaseAdapter`` holds the widths, checks the input's last dim, and converts the
weights to and from LLaVA's ``mm_projector`` state dict for adapters that have a
LLaVA equivalent (a subclass says which through ``llava_projector_type`` and
``_llava_module``).
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from alignkit.utils.validate import check_int


def _check_width(name: str, value) -> int:
    return check_int(name, value, low=1)


class BaseAdapter(nn.Module):
    """Base class of adapters: ``forward(x: (..., D)) -> (..., E)``.

    Subclasses implement ``forward`` (calling ``self.check_input(x)`` first) and,
    if LLaVA has an equivalent projector, ``llava_projector_type`` and ``_llava_module``.

    Args:
        vision_dim: D, the width of the vision features the adapter reads.
        llm_dim: E, the width of the LLM's input embeddings it writes.
    """

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.vision_dim = _check_width("vision_dim", vision_dim)
        self.llm_dim = _check_width("llm_dim", llm_dim)

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError unless ``x`` is a tensor of shape ``(..., vision_dim)``."""
        if not isinstance(x, Tensor):
            raise ValueError(
                f"{type(self).__name__} expects a tensor of shape (..., {self.vision_dim}), got {type(x).__name__}"
            )
        if x.dim() == 0 or x.shape[-1] != self.vision_dim:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (..., {self.vision_dim}) "
                f"(vision_dim={self.vision_dim}), got shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"vision_dim={self.vision_dim}, llm_dim={self.llm_dim}"

    # --- LLaVA interop ------------------------------------------------------
    @property
    def llava_projector_type(self) -> str | None:
        """LLaVA's ``mm_projector_type`` that builds this exact module, or None if LLaVA has none."""
        return None

    def _llava_module(self) -> nn.Module:
        """The submodule whose ``state_dict`` has LLaVA's ``mm_projector`` keys."""
        raise NotImplementedError(f"{type(self).__name__} has no LLaVA mm_projector equivalent")

    def _require_llava(self) -> nn.Module:
        if self.llava_projector_type is None:
            raise ValueError(
                f"{self!r} has no LLaVA mm_projector equivalent (LLaVA builds 'linear' and 'mlp<N>x_gelu' "
                "projectors with hidden width = llm_dim)"
            )
        return self._llava_module()

    def to_llava_state_dict(self, prefix: str = "") -> dict[str, Tensor]:
        """This adapter's weights under LLaVA's ``mm_projector`` keys, each prefixed by ``prefix``.

        LLaVA's ``mm_projector.bin`` uses ``prefix='model.mm_projector.'``. The
        tensors are the parameters themselves (detach/clone before editing them).
        """
        return {prefix + key: value for key, value in self._require_llava().state_dict().items()}

    def from_llava_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str = "", strict: bool = True):
        """Load weights saved under LLaVA's ``mm_projector`` keys (each starting with ``prefix``).

        Keys that do not start with ``prefix`` are ignored, so a whole LLaVA
        checkpoint can be passed with ``prefix='model.mm_projector.'``. Returns
        ``nn.Module.load_state_dict``'s result (missing/unexpected keys).
        """
        module = self._require_llava()
        own = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
        return module.load_state_dict(own, strict=strict)
