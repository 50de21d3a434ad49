"""``tools/export_hf.py CHECKPOINT OUT_DIR``: a trained ``LLaVAModel`` as a Hugging Face LLaVA folder.

OUT_DIR then holds what ``LlavaForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained`` read — ``config.json``,
``generation_config.json``, ``model*.safetensors``, the tokenizer (with
``<image>``), the processor (``CLIPImageProcessor``, or ``LlavaImageProcessor``
with padding for pad-to-square models) and a chat template that writes
prompts the way the model was trained — plus LLaVA's ``mm_projector.bin``
(written by ``tools/convert_checkpoint.py``'s converter) and
``alignkit_export.json`` (where it came from).

CHECKPOINT is a stage-2 checkpoint, or a stage-1 one (its frozen LLM is in the
checkpoint too, or comes from the config's ``llm.pretrained``); its model is
rebuilt from the description (data, never Python) stored in the checkpoint, or
from ``--config``. The conversation template
is the training data's (``train_dataloader.dataset.template``) unless
``--template`` says otherwise; the image preprocessing is the training data's
``image_processor``. The mapping itself is :mod:`alignkit.export.hf`.

An existing OUT_DIR is refused unless ``--force`` (which replaces it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from mmengine.config import DictAction

from alignkit.cli import console, plain
from alignkit.cli.common import load_model_and_source
from alignkit.export.artifact import adapter_config
from alignkit.export.hf import build_llava, image_processor_of, template_of, write_llava
from alignkit.export.llava_projector import to_llava
from alignkit.utils import validate

DTYPES = {"auto": None, **validate.DTYPES}


def check_target(out_dir: str, force: bool) -> None:
    if os.path.exists(out_dir) and not force:
        raise ValueError(f"export target {out_dir!r} already exists; pass --force to replace it")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"export target {out_dir!r} exists and is not a folder")


def export(model, cfg, checkpoint: str | None, out_dir: str, template=None, dtype: torch.dtype | None = None,
           force: bool = False, max_shard_size: str = "5GB") -> str:
    """Write the HF LLaVA folder for ``model`` (module docstring); returns ``out_dir``.

    Written to a temporary folder next to ``out_dir`` and renamed into place, so
    a failed export leaves nothing half-written.
    """
    check_target(out_dir, force)
    template = template_of(cfg) if template is None else template
    exported = build_llava(model, image_processor_of(cfg, model), template, dtype=dtype)
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        write_llava(exported, tmp, max_shard_size)
        if checkpoint is not None:
            kind = to_llava(checkpoint, str(tmp / "mm_projector.bin"), adapter_config(model.adapter))
        else:
            kind = None
        info = dict(
            format="alignkit.hf_llava/1",
            checkpoint=os.path.abspath(checkpoint) if checkpoint else None,
            config=cfg.filename,
            template=template.name,
            image_token_id=exported.image_token_id,
            image_seq_length=model.num_visual_tokens,
            embedding_rows_added=exported.added_rows,
            mm_projector_type=kind,
            dtype=exported.config["dtype"],
        )
        (tmp / "alignkit_export.json").write_text(json.dumps(info, indent=1))
        if out.exists():
            check_target(out_dir, force)  # still allowed: --force
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return str(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="an mmengine checkpoint of a LLaVAModel (iter_N.pth)")
    p.add_argument("out_dir", help="the folder to write (must not exist, unless --force)")
    p.add_argument("--config", help="the config the checkpoint was trained with (default: the model description stored in the checkpoint)")
    p.add_argument("--template", help="conversation template of the prompts (default: the training data's)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="auto", help="weights dtype (auto: the LLM's)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE", help="override config entries")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    check_target(args.out_dir, args.force)  # before loading a 7B model
    first, second = (args.config, args.checkpoint) if args.config else (args.checkpoint, None)
    if not os.path.isfile(args.checkpoint):
        raise ValueError(f"checkpoint {args.checkpoint!r} does not exist")
    model, cfg, source = load_model_and_source(first, second, args.cfg_options, device="cpu")
    out = export(model, cfg, source.checkpoint, args.out_dir, template_of(cfg, args.template),
                 DTYPES[args.dtype], args.force, args.max_shard_size)
    print(f"wrote {out} (Hugging Face LlavaForConditionalGeneration + processor, and mm_projector.bin)")
    return out


cli = console(main)  # the console script alignkit-export-hf

if __name__ == "__main__":
    main()
