"""``tools/chat.py MODEL --image PATH_OR_URL [--question Q]``: talk with a model about an image, as LLaVA's CLI.

MODEL is one of:

- an mmengine checkpoint (``iter_N.pth``) written by ``tools/train.py``: built
  from the JSON model description it carries (no code from the file runs), or
  from ``--config``;
- an HF export folder (``tools/export_hf.py``; ``config.json`` of
  ``model_type`` llava): transformers' ``LlavaForConditionalGeneration`` and
  the folder's processor, offline, no remote code;
- ``--projector mm_projector.bin`` (LLaVA's projector file) with ``--config``
  (the vision tower, LLM and template to build) and optionally ``--llm`` (a
  base LLM folder replacing the config's); MODEL is then left out.

Without ``--question`` it is a multi-turn chat: lines are read from stdin
until EOF or ``exit``; each turn is added to the conversation in the model's
template, the image once, in the first user turn (as LLaVA does). ``plain``
(stage 1) has no turns: the model sees the image alone each time and the
question is not used (said on stderr). With ``--question`` it answers once.

Answers are streamed to stdout. ``--temperature 0`` (the default) is greedy;
above 0 tokens are sampled (``--top-p`` nucleus, ``--seed`` for a
reproducible draw). ``--image`` may be an http(s) URL: downloaded into memory
(at most ``--max-image-mb``, ``--timeout`` seconds), then opened by the same
rules as local files. The forward runs in float32 (``--autocast`` keeps the
model's autocast dtype, e.g. bf16 on a GPU). Chatting builds no labeler and no
text bank: the aligner and ``align_eval`` are dropped before the model is built.

``main`` returns the answer (one-shot) or the list of answers (chat).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence

import torch
from mmengine.config import Config, DictAction

from alignkit.cli import console, plain
from alignkit.cli.common import (  # noqa: F401  (conversation_prompt, prompt_ids: chat's API, kept importable here)
    build_model,
    conversation_prompt,
    load_weights,
    prompt_ids,
    resolve,
    sampling_kwargs,
    stop_token_ids,
)
from alignkit.datasets.image_io import ImageError, ImageNotFound, open_image
from alignkit.datasets.templates import get_template
from alignkit.export.hf import expand_image_placeholders, image_processor_of, template_of
from alignkit.export.llava_projector import read_llava_projector

EXIT_WORDS = ("exit", "quit")


# ---------------------------------------------------------------------------------------------- images
def fetch_url(url: str, max_bytes: int, timeout: float) -> bytes:
    """The bytes at ``url`` (at most ``max_bytes``); ValueError naming the URL on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) checked by the caller)
            data = response.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ValueError(f"--image {url!r} cannot be downloaded: {err}") from None
    if len(data) > max_bytes:
        raise ValueError(f"--image {url!r} is larger than {max_bytes} bytes (--max-image-mb)")
    return data


def read_image(path: str, max_bytes: int = 32 << 20, timeout: float = 30.0):
    """The image at a local ``path`` or an http(s) URL as RGB (``open_image``'s rules); ValueError naming it."""
    if path.lower().startswith(("http://", "https://")):
        data = fetch_url(path, max_bytes, timeout)
        with tempfile.TemporaryDirectory(prefix="alignkit-chat-") as tmp:
            local = os.path.join(tmp, "image")
            with open(local, "wb") as f:
                f.write(data)
            try:
                return open_image(local)
            except ImageError as err:
                raise ValueError(f"--image {path!r} cannot be read as an image: {err.detail}") from None
    try:
        return open_image(path)
    except ImageNotFound:
        raise ValueError(f"--image {path!r} does not exist") from None
    except ImageError as err:
        raise ValueError(f"--image {path!r} cannot be read as an image: {err.detail}") from None


# ---------------------------------------------------------------------------------------------- backends
class AlignkitChat:
    """A ``LLaVAModel`` (from a checkpoint, or a config + LLaVA projector) behind the chat loop."""

    def __init__(self, model, cfg, template, image_processor):
        self.model, self.cfg, self.template, self.image_processor = model, cfg, template, image_processor
        self.tokenizer = model.tokenizer

    def pixels(self, image) -> torch.Tensor:
        return self.image_processor(image)[None]

    def generate(self, input_ids: torch.Tensor, pixels: torch.Tensor, **kwargs) -> list[int]:
        device = next(self.model.llm.parameters()).device
        out = self.model.generate(input_ids.to(device), pixels.to(device), **kwargs)
        return out[0].tolist()


class HFChat:
    """A transformers LLaVA export folder behind the chat loop; prompts in alignkit's template, its own tokenizer."""

    def __init__(self, folder: str, template, device: str, autocast: bool):
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        kw = dict(local_files_only=True, trust_remote_code=False)
        self.processor = AutoProcessor.from_pretrained(folder, **kw)
        self.tokenizer = self.processor.tokenizer
        self.model = LlavaForConditionalGeneration.from_pretrained(
            folder, dtype=None if autocast else torch.float32, **kw).to(device).eval()
        cfg = self.model.config
        self.image_token_id = getattr(cfg, "image_token_id", None)
        if self.image_token_id is None:
            self.image_token_id = cfg.image_token_index
        vision = cfg.vision_config  # P: LLaVA's 'default' strategy drops the CLS token, 'full' keeps it
        self.num_tokens = (vision.image_size // vision.patch_size) ** 2 + int(
            getattr(cfg, "vision_feature_select_strategy", "default") == "full")
        self.template = template
        self.device = device

    def pixels(self, image) -> torch.Tensor:
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, pixels: torch.Tensor, **kwargs) -> list[int]:
        ids = expand_image_placeholders(input_ids[0], self.image_token_id, self.num_tokens)[None].to(self.device)
        for key in ("eos_token_id", "pad_token_id"):
            kwargs.setdefault(key, getattr(self.tokenizer, key, None))
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  pixel_values=pixels.to(self.device, self.model.dtype), **kwargs)
        return out[0, ids.shape[1]:].tolist()


def hf_export_folder(path: str) -> dict | None:
    """The ``config.json`` of an HF LLaVA folder, None for a path that is not a folder; ValueError otherwise."""
    if not os.path.isdir(path):
        return None
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise ValueError(f"{path!r} is a folder without config.json: not an HF export (tools/export_hf.py writes one)")
    try:
        with open(config, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{config!r} is not readable JSON: {err}") from None
    if not isinstance(data, dict) or data.get("model_type") != "llava":
        kind = data.get("model_type") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{config!r} has model_type {kind!r}; expected 'llava' (an HF LLaVA export)")
    return data


def chat_config(cfg: Config) -> Config:
    """``cfg`` with the aligner and ``align_eval`` removed: chatting needs no labeler and no text bank."""
    cfg.model.aligner = None
    if "align_eval" in cfg.model:
        cfg.model.align_eval = None
    if "aligner" in cfg.model.get("trainable", ()):
        cfg.model.trainable = [t for t in cfg.model.trainable if t != "aligner"]
    return cfg


def load_projector(model, projector: str) -> None:
    """LLaVA's ``mm_projector.bin`` (``model.mm_projector.*``) into ``model.adapter``; ValueError naming the file."""
    own = read_llava_projector(projector, name=f"--projector {projector!r}")
    try:
        model.adapter.from_llava_state_dict(own)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ValueError(f"--projector {projector!r} does not fit the config's adapter: {err}") from None


def load_backend(args, parser):
    if args.projector is not None:
        if args.model is not None:
            parser.error("give MODEL or --projector (with --config), not both")
        if args.config is None:
            parser.error("--projector needs --config: the config of the model to build (tower, LLM, template)")
        for flag, path in (("--projector", args.projector), ("--config", args.config)):
            if not os.path.isfile(path):
                parser.error(f"{flag} {path!r} does not exist")
        if args.llm is not None and not os.path.isdir(args.llm):
            parser.error(f"--llm {args.llm!r} is not a folder (a base LLM saved with save_pretrained)")
        cfg, _ = resolve(args.config)
        if args.llm is not None:
            llm = {k: v for k, v in cfg.model.llm.items() if k != "config"}  # the folder's own config
            cfg.model.llm = dict(llm, pretrained=args.llm)
            cfg.model.tokenizer = args.llm
    else:
        if args.model is None:
            parser.error("give MODEL (a checkpoint .pth or an HF export folder) or --projector with --config")
        if args.llm is not None:
            parser.error("--llm goes with --projector")
        try:
            folder = hf_export_folder(args.model)
        except ValueError as err:
            parser.error(str(err))
        if folder is not None:
            info_path = os.path.join(args.model, "alignkit_export.json")
            name = args.template
            if name is None and os.path.isfile(info_path):
                with open(info_path, encoding="utf-8") as f:
                    name = (json.load(f) or {}).get("template")
            if name is None:
                parser.error(f"{args.model!r} has no alignkit_export.json naming its template: pass --template")
            return HFChat(args.model, get_template(name), args.device, args.autocast)
        if not os.path.isfile(args.model):
            parser.error(f"MODEL {args.model!r} does not exist (expected a checkpoint .pth or an HF export folder)")
        if args.config is not None and not os.path.isfile(args.config):
            parser.error(f"--config {args.config!r} does not exist")
        cfg, _ = resolve(args.config, args.model) if args.config else resolve(args.model)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = build_model(chat_config(cfg), args.device)
    if args.projector is not None:
        load_projector(model, args.projector)
    else:
        load_weights(model, args.model, leave_out=("aligner.",))  # the chat model has no aligner
    if not args.autocast:
        model.autocast_dtype = None
    return AlignkitChat(model, cfg, template_of(cfg, args.template), image_processor_of(cfg, model))


# ---------------------------------------------------------------------------------------------- the loop
def _streamer(tokenizer, stream):
    from transformers import TextStreamer

    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    streamer.on_finalized_text = lambda text, stream_end=False: print(
        text, end="\n" if stream_end else "", file=stream, flush=True)
    return streamer


def answer(backend, pixels, turns, args, stream=None) -> str:
    """One answer to the last question of ``turns`` (streamed to ``stream``)."""
    ids = prompt_ids(backend.tokenizer, backend.template, turns)
    kw = sampling_kwargs(args.max_new_tokens, args.temperature, args.top_p)
    stops = stop_token_ids(backend.tokenizer, backend.template)
    if stops:  # else generate's default: the tokenizer's EOS, if any
        kw["eos_token_id"] = stops
    if stream is not None:
        kw["streamer"] = _streamer(backend.tokenizer, stream)
    new = backend.generate(ids, pixels, **kw)
    return backend.tokenizer.decode(new, skip_special_tokens=True)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="alignkit-chat", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a checkpoint (iter_N.pth) or an HF export folder; "
                                            "left out with --projector")
    p.add_argument("--image", required=True, help="the image to talk about: a path or an http(s) URL")
    p.add_argument("--question", help="ask once and exit (default: a multi-turn chat on stdin)")
    p.add_argument("--config", help="the config of the model (default: the description stored in the checkpoint)")
    p.add_argument("--projector", help="LLaVA's mm_projector.bin to load into the --config model's adapter")
    p.add_argument("--llm", help="with --projector: a base LLM folder replacing the config's LLM and tokenizer")
    p.add_argument("--template", help="conversation template (default: the training data's / the export's)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (with --temperature > 0)")
    p.add_argument("--seed", type=int, help="seed of the sampling RNG (reproducible answers)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-image-mb", type=float, default=32.0, help="size cap of an --image URL download")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for an --image URL download")
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", action="store_true", help="keep the model's autocast dtype (default: float32)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE", help="override config entries")
    args = p.parse_args(argv)
    if not args.temperature >= 0:
        p.error(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        p.error(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.max_new_tokens < 1:
        p.error(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not args.max_image_mb > 0 or not args.timeout > 0:
        p.error("--max-image-mb and --timeout must be > 0")
    return p, args


def main(argv: Sequence[str] | None = None, stdin=None) -> str | list[str]:
    parser, args = parse_args(argv)
    try:  # before loading the model: a bad image fails at once
        image = read_image(args.image, int(args.max_image_mb * (1 << 20)), args.timeout)
    except ValueError as err:
        parser.error(str(err))
    backend = load_backend(args, parser)
    if backend.template.name == "plain":
        print("note: template 'plain' (stage 1) shows the model the image alone; the question is not used",
              file=sys.stderr)
    pixels = backend.pixels(image)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    if args.question is not None:
        return answer(backend, pixels, [(args.question, None)], args, stream=sys.stdout)
    stdin = sys.stdin if stdin is None else stdin
    turns: list[tuple[str, str | None]] = []
    answers = []
    while True:
        print("USER: ", end="", file=sys.stderr, flush=True)
        line = stdin.readline()
        if not line:
            print(file=sys.stderr)
            break
        question = line.strip()
        if question.lower() in EXIT_WORDS:
            break
        if not question:
            continue
        print("ASSISTANT: ", end="", file=sys.stderr, flush=True)
        reply = answer(backend, pixels, turns + [(question, None)], args, stream=sys.stdout)
        turns.append((question, reply.strip()))
        answers.append(reply)
    return answers


cli = console(main)  # the console script alignkit-chat

if __name__ == "__main__":
    main()
