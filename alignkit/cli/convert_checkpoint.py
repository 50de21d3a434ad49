"""``tools/convert_checkpoint.py SRC DST``: the stage-1 adapter as LLaVA's ``mm_projector.bin``.

SRC is an ``adapter.safetensors`` artifact (``AdapterArtifactHook``) or an
mmengine checkpoint of a ``LLaVAModel`` (``iter_N.pth``; its ``adapter.*``
weights, plus ``--adapter-config`` JSON when it is not an ``MLPAdapter`` with
LLaVA's shape, which the weights then determine). DST gets LLaVA's layout:
``torch.save({'model.mm_projector.0.weight': ..., 'model.mm_projector.0.bias': ...,
'model.mm_projector.2.weight': ..., ...})``, the file LLaVA's
``--pretrain_mm_mlp_adapter`` reads. The projector type LLaVA must be told
(``--mm_projector_type``) is printed.

``--to alignkit`` converts the other way: ``mm_projector.bin`` -> ``adapter.safetensors``.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

import torch

from alignkit.cli import console, plain
from alignkit.engine.compat import load_checkpoint_file

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
    from alignkit.registry import ADAPTERS

    if src.endswith(".safetensors"):
        from alignkit.models.artifact import load_adapter

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


def to_alignkit(src: str, dst: str) -> str:
    from alignkit.models.artifact import save_adapter
    from alignkit.registry import ADAPTERS

    state = load_checkpoint_file(src, map_location="cpu")
    if not isinstance(state, dict):
        raise ValueError(f"{src!r} holds a {type(state).__name__}, not a state dict; is it LLaVA's mm_projector.bin?")
    own = {k[len(LLAVA_PREFIX):]: v for k, v in state.items() if k.startswith(LLAVA_PREFIX)}
    if not own:
        raise ValueError(f"{src!r} has no {LLAVA_PREFIX}* keys; is it LLaVA's mm_projector.bin?")
    adapter = ADAPTERS.build(_mlp_config_from_llava(own))
    adapter.from_llava_state_dict(own)
    save_adapter(dst, adapter)
    return adapter.llava_projector_type


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="adapter.safetensors or an mmengine checkpoint (--to llava); mm_projector.bin (--to alignkit)")
    p.add_argument("dst", help="output file")
    p.add_argument("--to", choices=("llava", "alignkit"), default="llava")
    p.add_argument("--adapter-config", help="JSON config of the adapter, for a checkpoint whose adapter is not LLaVA-shaped")
    args = p.parse_args(argv)
    if not os.path.isfile(args.src):
        raise SystemExit(f"convert_checkpoint: {args.src!r} does not exist")
    if args.to == "llava":
        cfg = json.loads(args.adapter_config) if args.adapter_config else None
        kind = to_llava(args.src, args.dst, cfg)
        print(f"wrote {args.dst} (LLaVA mm_projector, --mm_projector_type {kind})")
    else:
        kind = to_alignkit(args.src, args.dst)
        print(f"wrote {args.dst} (alignkit adapter artifact from LLaVA {kind})")
    return args.dst


cli = console(main)  # the console script alignkit-convert-checkpoint

if __name__ == "__main__":
    main()
