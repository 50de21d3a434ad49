"""``tools/chat.py CHECKPOINT --image PATH [--question Q]``: a greedy answer about an image, streamed to stdout.

The prompt is written with the conversation template the model was trained
with (the training data's, or ``--template``): ``vicuna_v1`` gives
``SYSTEM USER: <image>\\nQ ASSISTANT:``; ``plain`` (stage 1) gives the bare
image, so a stage-1 model captions it and the question is not used (said on
stderr). The image goes through the training data's image processor. Tokens
are printed as they are generated (transformers' ``TextStreamer``), greedily,
until EOS or ``--max-new-tokens``; the forward runs in float32 on CPU
(``--autocast`` keeps the model's own autocast dtype, e.g. bf16 on a GPU).

``main`` returns the answer (the decoded new tokens).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import torch
from mmengine.config import DictAction

from alignkit.cli import console, plain
from alignkit.cli.common import load_model_and_source
from alignkit.datasets.image_io import ImageError, ImageNotFound, open_image
from alignkit.datasets.templates import get_template, tokenize_with_image
from alignkit.export.hf import generation_prompt, image_processor_of, template_of


def read_image(path: str):
    """The image at ``path`` as RGB (``open_image``); ValueError naming the path if it is missing or unreadable."""
    try:
        return open_image(path)
    except ImageNotFound:
        raise ValueError(f"--image {path!r} does not exist") from None
    except ImageError as err:
        raise ValueError(f"--image {path!r} cannot be read as an image: {err.detail}") from None


def prompt_ids(tokenizer, template, question: str) -> torch.Tensor:
    """Long[1, T]: the generation prompt of a one-turn question about one image, with the image placeholder."""
    template = get_template(template)
    return torch.tensor([tokenize_with_image(tokenizer, generation_prompt(template, question), template.add_bos)])


@torch.no_grad()
def answer(model, pixels: torch.Tensor, input_ids: torch.Tensor, max_new_tokens: int = 64, stream=None) -> str:
    """Greedy answer of ``model`` (a ``LLaVAModel``) to ``input_ids`` about ``pixels`` (3, H, W), streamed to ``stream``."""
    from transformers import TextStreamer

    device = next(model.llm.parameters()).device
    input_ids = input_ids.to(device)
    images = pixels[None].to(device)
    with model._autocast(device):
        spliced, _, _ = model._prepare(input_ids, None, None, images, None)
        streamer = None
        if stream is not None:
            streamer = TextStreamer(model.tokenizer, skip_prompt=False, skip_special_tokens=True)
            streamer.on_finalized_text = lambda text, stream_end=False: print(text, end="" if not stream_end else "\n",
                                                                              file=stream, flush=True)
        tok = model.tokenizer
        out = model.llm.generate(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=getattr(tok, "eos_token_id", None),
            pad_token_id=getattr(tok, "pad_token_id", None),
            streamer=streamer,
        )
    return tok.decode(out[0].tolist(), skip_special_tokens=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="an mmengine checkpoint of a LLaVAModel (iter_N.pth)")
    p.add_argument("--image", required=True, help="the image to ask about")
    p.add_argument("--question", default="Describe the image briefly.", help="the question (default: a description)")
    p.add_argument("--config", help="the config the checkpoint was trained with (default: the model description stored in the checkpoint)")
    p.add_argument("--template", help="conversation template of the prompt (default: the training data's)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", action="store_true", help="keep the model's autocast dtype (default: float32)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE", help="override config entries")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    image = read_image(args.image)  # before loading the model: a bad path fails at once
    if not os.path.isfile(args.checkpoint):
        raise ValueError(f"checkpoint {args.checkpoint!r} does not exist")
    first, second = (args.config, args.checkpoint) if args.config else (args.checkpoint, None)
    model, cfg, _ = load_model_and_source(first, second, args.cfg_options, device=args.device)
    if not args.autocast:
        model.autocast_dtype = None
    template = template_of(cfg, args.template)
    if template.name == "plain":
        print("note: template 'plain' (stage 1) shows the model the image alone; the question is not used",
              file=sys.stderr)
    pixels = image_processor_of(cfg, model)(image)
    ids = prompt_ids(model.tokenizer, template, args.question)
    return answer(model, pixels, ids, args.max_new_tokens, stream=sys.stdout)


cli = console(main)  # the console script alignkit-chat

if __name__ == "__main__":
    main()
