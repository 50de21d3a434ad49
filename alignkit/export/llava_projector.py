"""The stage-1 adapter as LLaVA's ``mm_projector.bin``, and back.

LLaVA's layout: ``torch.save({'model.mm_projector.0.weight': ...,
'model.mm_projector.0.bias': ..., 'model.mm_projector.2.weight': ..., ...})``,
the file LLaVA's ``--pretrain_mm_mlp_adapter`` reads. The source of
:func:`to_llava` is an ``adapter.safetensors`` artifact
(``AdapterArtifactHook``) or an mmengine checkpoint of a ``LLaVAModel``
(``iter_N.pth``; its ``adapter.*`` weights, plus an adapter config when it is
not an ``MLPAdapter`` with LLaVA's shape, which the weights then determine).
Both converters return the projector type LLaVA must be told
(``--mm_projector_type``). ``tools/convert_checkpoint.py`` is the command line.
"""
from __future__ import annotations

import torch

from alignkit.engine.compat import load_checkpoint_file
from alignkit.export.artifact import load_adapter, save_adapter
from alignkit.registry import ADAPTERS

LLAVA_PREFIX = "model.mm_projector."


def _mlp_config_from_llava(state: dict) -> dict:
    """An MLPAdapter config from LLaVA projector weights (``0.weight``, ``2.weight``, ...)."""
    layers = sorted(int(k.split(".")[0]) for k in state if k.endswith(".weight"))
    if not layers or layers != list(range(0, 2 * len(layers), 2)):
        if set(state) == {"weight", "bias"}:
            out_dim, in_dim = state["weight"].shape
            return dict(type="LinearAdapter", vision_dim=int(in_dim), llm_dim=int(out_dim))
        raise ValueError(f"not a LLaVA mlp<N>x_gelu / linear projector: keys {sorted(state)[:6]}")
    first, last = state[f"{layers[0]}.weight"], state[f"{layers[-1]}.weight"]
    return dict(type="MLPAdapter", vision_dim=int(first.shape[1]), llm_dim=int(last.shape[0]), depth=len(layers),
                act="GELU")


def _load_adapter(src: str, adapter_config: dict | None):
    if src.endswith(".safetensors"):
        return load_adapter(src).build_adapter()
    ckpt = load_checkpoint_file(src, map_location="cpu")
    state = ckpt.get("state_dict", ckpt)
    own = {k[len("adapter."):]: v for k, v in state.items() if k.startswith("adapter.")}
    if not own:
        raise ValueError(f"{src!r} holds no adapter.* weights (is it a LLaVAModel checkpoint?)")
    if adapter_config is None:
        # MLPAdapter keeps LLaVA's layout under `layers.`; LinearAdapter under `proj.`.
        llava_like = {k.split(".", 1)[1]: v for k, v in own.items()}
        adapter_config = _mlp_config_from_llava(llava_like)
    adapter = ADAPTERS.build(adapter_config)
    adapter.load_state_dict(own)
    return adapter


def to_llava(src: str, dst: str, adapter_config: dict | None = None) -> str:
    adapter = _load_adapter(src, adapter_config)
    state = {k: v.detach().clone().contiguous() for k, v in adapter.to_llava_state_dict(LLAVA_PREFIX).items()}
    torch.save(state, dst)
    return adapter.llava_projector_type


def read_llava_projector(src: str, name: str | None = None) -> dict:
    """LLaVA's ``mm_projector.bin`` (weights-only) as the projector's own keys (``0.weight``, ...);
    ValueError naming the file (as ``name``, e.g. ``--projector 'x.bin'``) when it is not one."""
    name = name or repr(src)
    state = load_checkpoint_file(src, map_location="cpu")
    if not isinstance(state, dict):
        raise ValueError(f"{name} holds a {type(state).__name__}, not a state dict; is it LLaVA's mm_projector.bin?")
    own = {k[len(LLAVA_PREFIX):]: v for k, v in state.items() if k.startswith(LLAVA_PREFIX)}
    if not own:
        raise ValueError(f"{name} has no {LLAVA_PREFIX}* keys; is it LLaVA's mm_projector.bin?")
    return own


def to_alignkit(src: str, dst: str) -> str:
    own = read_llava_projector(src)
    adapter = ADAPTERS.build(_mlp_config_from_llava(own))
    adapter.from_llava_state_dict(own)
    save_adapter(dst, adapter)
    return adapter.llava_projector_type
