"""The stage-1 artifact: the adapter (and the align loss's temperature) as one safetensors file.

Layout of ``adapter.safetensors``:

- tensors ``adapter.<key>`` — the adapter's state dict (``MLPAdapter``:
  ``adapter.layers.0.weight`` ...), and ``align_loss.<key>`` — the align loss's
  (``align_loss.logit_scale``) when the model had an aligner;
- metadata (str -> str): ``format`` (``alignkit.adapter/1``), ``adapter_type``,
  ``adapter_config`` (JSON: the arguments that rebuild the adapter, widths
  included), ``llava_projector_type`` (LLaVA's ``mm_projector_type`` or ``""``),
  ``temperature``.

Stage 2 loads it with ``LLaVAModel(adapter_weights=path)``;
``tools/convert_checkpoint.py`` turns it into LLaVA's ``mm_projector.bin``.

The file is byte-reproducible: the same weights give the same bytes (the
header's keys are sorted; safetensors itself writes metadata in a per-process
random order). Read back, ``adapter_config`` is data a received file brings, so
it may only name a class registered in ``ADAPTERS`` and give it plain keyword
arguments (str, int, float, bool, None, lists of those, and a dict of those
without a ``type`` key, for ``act_kwargs``); anything else is refused naming the file and the key.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from alignkit.registry import ADAPTERS
from alignkit.utils.io import write_bytes_atomic

FORMAT = "alignkit.adapter/1"
ADAPTER_PREFIX = "adapter."
LOSS_PREFIX = "align_loss."


def adapter_config(adapter: nn.Module) -> dict:
    """The registry config that rebuilds ``adapter`` (type, widths and the arguments it keeps)."""
    cfg = {"type": type(adapter).__name__, "vision_dim": adapter.vision_dim, "llm_dim": adapter.llm_dim}
    for key in ("depth", "act", "hidden_dim", "act_kwargs"):
        if hasattr(adapter, key):
            cfg[key] = getattr(adapter, key)
    if hasattr(adapter, "proj") and isinstance(adapter.proj, nn.Linear):
        cfg["bias"] = adapter.proj.bias is not None
    return cfg


def safetensors_bytes(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """``safetensors.torch.save`` with the JSON header's keys sorted: same tensors and metadata, same bytes."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads the header to 8 bytes, so the data stays aligned
    return len(header).to_bytes(8, "little") + header + raw[8 + n:]


def save_adapter(path: str | os.PathLike, adapter: nn.Module, align_loss: nn.Module | None = None,
                 adapter_state: dict | None = None, loss_state: dict | None = None) -> str:
    """Write the artifact (atomically: a temp file renamed into place; byte-reproducible). Returns the path.

    ``adapter_state``/``loss_state``: the weights to write instead of the modules' own ``state_dict()``
    (``AdapterArtifactHook`` passes ZeRO-3's whole weights, ``alignkit.models.zero3.full_state_dict``).
    """
    adapter_state = adapter.state_dict() if adapter_state is None else adapter_state
    tensors = {ADAPTER_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in adapter_state.items()}
    temperature = ""
    if align_loss is not None:
        loss_state = align_loss.state_dict() if loss_state is None else loss_state
        tensors.update({LOSS_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in loss_state.items()})
        temperature = repr(float(getattr(align_loss, "temperature", float("nan"))))
    metadata = {
        "format": FORMAT,
        "adapter_type": type(adapter).__name__,
        "adapter_config": json.dumps(adapter_config(adapter), sort_keys=True),
        "llava_projector_type": getattr(adapter, "llava_projector_type", None) or "",
        "temperature": temperature,
    }
    path = os.fspath(path)
    write_bytes_atomic(path, [safetensors_bytes(tensors, metadata)], unique=True)
    return path


_PLAIN = (str, int, float, bool, type(None))


def check_adapter_config(cfg, path: str) -> dict:
    """``cfg`` if it names a registered ``ADAPTERS`` type with plain keyword arguments; else ValueError naming ``path``."""
    def refuse(why: str):
        raise ValueError(f"adapter artifact {path!r}: refused its adapter_config: {why}; nothing was imported or built")

    if not isinstance(cfg, dict):
        refuse(f"expected a JSON object, got {type(cfg).__name__}")
    kind = cfg.get("type")
    ADAPTERS.import_from_location()
    if not isinstance(kind, str) or kind not in ADAPTERS.module_dict:
        refuse(f"type {kind!r} is not registered in ADAPTERS (one of {sorted(ADAPTERS.module_dict)})")
    for key, value in cfg.items():
        if isinstance(value, dict):
            # A nested 'type' would be built by whatever takes the dict: no registry names below the top.
            ok = "type" not in value and all(isinstance(k, str) and isinstance(v, _PLAIN) for k, v in value.items())
        elif isinstance(value, list):
            ok = all(isinstance(v, _PLAIN) for v in value)
        else:
            ok = isinstance(value, _PLAIN)
        if not ok:
            refuse(f"argument {key!r} = {value!r} is not a plain value (str, int, float, bool, None, or a flat "
                   "list or dict of those, without a nested 'type')")
    return cfg


@dataclass
class AdapterArtifact:
    """A loaded artifact: the adapter's and the loss's state dicts, and the metadata."""

    adapter_state: dict[str, Tensor]
    loss_state: dict[str, Tensor]
    metadata: dict[str, str]
    path: str = "<memory>"

    @property
    def adapter_config(self) -> dict:
        """The metadata's adapter config, checked (:func:`check_adapter_config`) before anyone builds it."""
        try:
            cfg = json.loads(self.metadata.get("adapter_config", ""))
        except json.JSONDecodeError as err:
            raise ValueError(f"adapter artifact {self.path!r}: adapter_config is not valid JSON: {err}") from None
        return check_adapter_config(cfg, self.path)

    def build_adapter(self) -> nn.Module:
        """The adapter, rebuilt from its config through ``ADAPTERS`` and loaded."""
        adapter = ADAPTERS.build(self.adapter_config)
        adapter.load_state_dict(self.adapter_state)
        return adapter


def load_adapter(path: str | os.PathLike) -> AdapterArtifact:
    """Read an artifact written by :func:`save_adapter`; ValueError if it is not one."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"adapter artifact {path!r} does not exist")
    with safe_open(path, framework="pt") as f:
        metadata = dict(f.metadata() or {})
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path!r} is not an alignkit adapter artifact (format {metadata.get('format')!r}, "
                             f"expected {FORMAT!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    adapter = {k[len(ADAPTER_PREFIX):]: v for k, v in tensors.items() if k.startswith(ADAPTER_PREFIX)}
    loss = {k[len(LOSS_PREFIX):]: v for k, v in tensors.items() if k.startswith(LOSS_PREFIX)}
    return AdapterArtifact(adapter, loss, metadata, path)


def load_adapter_into(path, adapter: nn.Module, align_loss: nn.Module | None = None) -> AdapterArtifact:
    """Load an artifact's weights into existing modules, checking the adapter's type and widths first."""
    art = load_adapter(path)
    want, have = art.adapter_config, adapter_config(adapter)
    diff = {k: (want.get(k), have.get(k)) for k in ("type", "vision_dim", "llm_dim") if want.get(k) != have.get(k)}
    if diff:
        raise ValueError(
            f"adapter artifact {os.fspath(path)!r} does not fit this model's adapter: "
            + ", ".join(f"{k}: artifact {a!r}, model {b!r}" for k, (a, b) in diff.items())
        )
    with torch.no_grad():
        adapter.load_state_dict(art.adapter_state)
        if align_loss is not None and art.loss_state:
            align_loss.load_state_dict(art.loss_state)
    return art
