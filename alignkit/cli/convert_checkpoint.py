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
The converters are :mod:`alignkit.export.llava_projector`.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from alignkit.cli import console, plain
from alignkit.export.llava_projector import to_alignkit, to_llava


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
