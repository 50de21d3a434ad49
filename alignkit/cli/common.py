"""What several command-line tools share; no ``alignkit.cli`` module imports another, only this one.

Building a ``LLaVAModel`` for the analysis tools from a CONFIG, a CHECKPOINT, or both
(:func:`load_model_and_source`):

- ``CHECKPOINT`` alone (``iter_N.pth``): the model description alignkit stores
  in the checkpoint (``meta['alignkit_model']``, JSON data; see
  :mod:`alignkit.engine.model_description`). Neither the Python config text
  mmengine stores in ``meta['cfg']`` nor a ``.py`` dumped next to the
  checkpoint is ever executed: a received checkpoint or folder runs no code.
- ``CONFIG`` alone: the model as the config builds it (a random adapter unless
  the config loads one): useful to look at an untrained model, and said so by
  the tools.
- ``CONFIG`` + ``CHECKPOINT``: that config (one the user names is trusted),
  those weights.

A checkpoint whose state dict does not fit the config's model (another config,
another LLM) is refused with the checkpoint's path and the first differing key,
instead of a half-loaded model.

Also here: the generation prompts of ``chat`` and ``test`` (one definition of
"the prompt up to the answer", from the conversation template), the
``label_data`` settings, annotation rows and image decoding of the label tools
(``extract_labels``, ``analyze_labels``) and the output-folder check of the
plotting tools.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings
from torch.utils.data import Dataset

from alignkit.datasets.constants import IMAGE_TOKEN
from alignkit.datasets.image_io import DEFAULT_MAX_ASPECT, DEFAULT_MAX_PIXELS, ImageError, open_image
from alignkit.datasets.templates import PlainTemplate, get_template, tokenize_with_image
from alignkit.engine.compat import load_checkpoint_file
from alignkit.engine.model_description import META_KEY, config_from_description
from alignkit.registry import MODELS
from alignkit.utils.validate import check_bool, check_int

CONFIG_SUFFIXES = (".py", ".json", ".yaml", ".yml")


class Source(NamedTuple):
    """Where a model came from: the config (a path, or ``checkpoint '...'``: its description) and the checkpoint."""

    config: str
    checkpoint: str | None

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"config {Path(self.config).name} only: weights as the config builds them (random adapter)"
        return f"checkpoint {Path(self.checkpoint).name}"


def is_config(path: str) -> bool:
    return str(path).endswith(CONFIG_SUFFIXES)


def config_of_checkpoint(checkpoint: str) -> Config:
    """The model description a checkpoint carries, as a ``Config`` (module docstring)."""
    ckpt = load_checkpoint_file(checkpoint, map_location="cpu")
    meta = (ckpt.get("meta") if isinstance(ckpt, dict) else None) or {}
    text = meta.get(META_KEY) if isinstance(meta, dict) else None
    if text is None:
        raise ValueError(
            f"checkpoint {checkpoint!r} carries no alignkit model description (meta[{META_KEY!r}]; checkpoints "
            "written by tools/train.py have one); its Python config text is never executed, so pass the config "
            "it was trained with: CONFIG CHECKPOINT (or --config CONFIG)"
        )
    return config_from_description(text, f"checkpoint {checkpoint!r}")


def resolve(config_or_checkpoint: str, checkpoint: str | None = None) -> tuple[Config, Source]:
    """``(Config, Source)`` for the command-line pair (module docstring)."""
    first = str(config_or_checkpoint)
    if not os.path.isfile(first):
        raise ValueError(f"config_or_checkpoint {first!r} does not exist (expected a config .py or a checkpoint .pth)")
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise ValueError(f"checkpoint {checkpoint!r} does not exist")
    if is_config(first):
        return Config.fromfile(first), Source(first, checkpoint)
    if checkpoint is not None:
        raise ValueError(f"got two checkpoints ({first!r}, {checkpoint!r}); expected CONFIG [CHECKPOINT] or CHECKPOINT")
    cfg = config_of_checkpoint(first)
    return cfg, Source(cfg.filename or "<checkpoint meta>", first)


def import_and_scope(cfg: Config) -> None:
    if cfg.get("custom_imports"):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get("default_scope", "alignkit"))


def build_model(cfg: Config, device: str | torch.device = "cpu"):
    """``cfg.model`` built through ``MODELS`` (custom imports and default scope applied), in eval mode.

    Built under the config's seed (``randomness.seed``, else 0), as the Runner
    builds it: parts with random weights that no checkpoint holds (the demo
    CLIP's text tower, hence its text bank and labels) come out as in
    training, and the same in every run. The caller's RNG state is kept.
    """
    if "model" not in cfg:
        raise ValueError(f"config {cfg.filename!r} has no `model`")
    import_and_scope(cfg)
    seed = (cfg.get("randomness") or {}).get("seed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else int(seed))
        model = MODELS.build(cfg.model)
    return model.to(device).eval()


def state_dict_diff(have: dict, want: dict) -> list[tuple[str, str, str]]:
    """``[(key, in checkpoint, in model)]`` for keys missing on one side or of another shape, sorted by key."""
    out = []
    for key in sorted(have.keys() | want.keys()):
        a = tuple(have[key].shape) if key in have else "missing"
        b = tuple(want[key].shape) if key in want else "missing"
        if a != b:
            out.append((key, str(a), str(b)))
    return out


def load_weights(model, checkpoint: str, leave_out: tuple[str, ...] = ()) -> None:
    """Load ``checkpoint``'s ``state_dict`` into ``model``, strictly; ValueError naming the first differing key.

    Keys starting with one of ``leave_out`` are dropped first (the chat model is built without its aligner:
    ``('aligner.',)``).
    """
    ckpt = load_checkpoint_file(checkpoint, map_location="cpu")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"checkpoint {checkpoint!r} holds no state_dict")
    if leave_out:
        state = {k: v for k, v in state.items() if not k.startswith(tuple(leave_out))}
    diffs = state_dict_diff(state, model.state_dict())
    if diffs:
        key, a, b = diffs[0]
        raise ValueError(
            f"checkpoint {checkpoint!r} does not fit the config's model ({len(diffs)} key(s) differ); first: "
            f"{key!r}: checkpoint {a}, model {b}. Was it trained with another config?"
        )
    aligner = getattr(model, "aligner", None)
    stale = False
    if aligner is not None and getattr(aligner, "word_table", None) is not None and model.tokenizer is not None:
        emb = model.llm.get_input_embeddings().weight
        name = next((n for n, p in model.named_parameters(remove_duplicate=False) if p is emb), None)
        stale = name is None or not torch.equal(state[name].to(emb.dtype), emb.detach().cpu())
    model.load_state_dict(state, strict=True)
    if stale:
        # The word table (Eq. 8) was built from the LLM's embeddings at construction; a checkpoint
        # whose LLM trained (stage 2) has other embeddings, so build it again from the loaded ones.
        aligner.build_word_table(model.tokenizer, model.llm.get_input_embeddings())


def load_model_and_source(config_or_checkpoint: str, checkpoint: str | None = None, cfg_options: dict | None = None,
                          device: str | torch.device = "cpu"):
    """``(model, Config, Source)``: a ``LLaVAModel`` in eval mode on ``device`` and what it was built from (module docstring)."""
    cfg, source = resolve(config_or_checkpoint, checkpoint)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = build_model(cfg, device)
    if source.checkpoint is not None:
        load_weights(model, source.checkpoint)
    return model, cfg, source


# --- generation prompts (chat, test) --------------------------------------------
def answer_prompt(template, conversations: Sequence[dict], has_image: bool = True) -> str:
    """The prompt text of a LLaVA conversation up to where its last answer starts.

    That is the template's text before its last supervised segment: what
    training showed the model before the tokens of that answer (``ASSISTANT:``
    for ``vicuna_v1``, the bare ``<image>`` for ``plain``). ``BadSample`` when
    the template refuses the conversation.
    """
    segments = get_template(template).render(conversations, has_image)
    last = max(i for i, s in enumerate(segments) if s.train)
    return "".join(s.text for s in segments[:last])


def conversation_prompt(template, turns: Sequence[tuple[str, str | None]]) -> str:
    """The prompt text for ``turns`` = [(question, answer), ..., (question, None)]: the image once, in the
    first user turn; ``plain`` has no turns (the bare image)."""
    template = get_template(template)
    if template.name == "plain":
        turns = turns[-1:]
    messages = []
    for i, (question, reply) in enumerate(turns):
        messages.append({"from": "human", "value": (IMAGE_TOKEN + "\n" + question) if i == 0 else question})
        messages.append({"from": "gpt", "value": reply if reply is not None else "x"})  # cut off again
    return answer_prompt(template, messages, True)


def prompt_ids(tokenizer, template, question: str | Sequence[tuple[str, str | None]]) -> torch.Tensor:
    """Long[1, T]: the generation prompt (one question, or turns as in :func:`conversation_prompt`)."""
    template = get_template(template)
    turns = [(question, None)] if isinstance(question, str) else list(question)
    return torch.tensor([tokenize_with_image(tokenizer, conversation_prompt(template, turns), template.add_bos)])


def stop_token_ids(tokenizer, template) -> list[int]:
    """The ids that end an answer: the tokenizer's EOS and the template's end-of-turn markers that are one special
    token (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``: a chat model closes its turn with them)."""
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    if hasattr(tokenizer, "get_added_vocab"):
        special |= set(tokenizer.get_added_vocab())
    for text in get_template(template).turn_ends:
        one = tokenizer.encode(text, add_special_tokens=False) if text in special else []
        if len(one) == 1 and one[0] not in ids:
            ids.append(int(one[0]))
    return ids


def answer_stop_strings(template) -> tuple[str, ...]:
    """Text that ends an answer, cut off the decoded answer: ``plain``'s separator (``"\\n"``; a stage-1 model ends
    its caption with it, not with EOS, and LLaVA's ``model_vqa`` stops there too). Chat templates end a turn with a
    special token (:func:`stop_token_ids`), which decoding drops."""
    template = get_template(template)
    return (template.sep,) if isinstance(template, PlainTemplate) and template.sep else ()


def sampling_kwargs(max_new_tokens: int, temperature: float, top_p: float) -> dict:
    """``generate``'s keyword arguments: greedy at ``temperature`` 0, else sampled with nucleus ``top_p``."""
    if temperature > 0:
        return dict(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p)
    return dict(max_new_tokens=max_new_tokens, do_sample=False)


# --- the label tools' data (extract_labels, analyze_labels) -------------------
@dataclass(frozen=True)
class LabelDataSettings:
    """``label_data`` of the config, validated."""

    ann_file: str
    image_folder: str
    batch_size: int = 64
    num_workers: int = 4
    shard_size: int = 4096
    # The image rules of training (alignkit.datasets.image_io.open_image, LLaVADataset's same-named options).
    allow_outside_root: bool = False
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_image_aspect: float = DEFAULT_MAX_ASPECT

    @classmethod
    def from_config(cls, cfg: Config) -> "LabelDataSettings":
        if "label_data" not in cfg:
            raise ValueError("config has no `label_data`; expected dict(ann_file=..., image_folder=..., ...)")
        raw = dict(cfg.label_data)
        known = tuple(f.name for f in fields(cls))
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"label_data has unknown key(s) {unknown}; valid keys are {list(known)}")
        for key in ("ann_file", "image_folder"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ValueError(f"label_data.{key} must be a path (str), got {raw.get(key)!r}")
        settings = cls(**raw)
        for key, low in (("batch_size", 1), ("num_workers", 0), ("shard_size", 1)):
            check_int(f"label_data.{key}", getattr(settings, key), low=low)
        check_bool("label_data.allow_outside_root", settings.allow_outside_root)
        return settings

    @property
    def image_rules(self) -> dict:
        """``open_image``'s keyword arguments (recorded in the manifest: they decide which images fail)."""
        return dict(allow_outside_root=self.allow_outside_root, max_pixels=self.max_image_pixels,
                    max_aspect=self.max_image_aspect)


class ImageRow(NamedTuple):
    row: int  # index in the JSON list
    id: str  # the sample id (str of the JSON "id")
    image: str  # the JSON "image" value
    path: str  # image_folder joined with it
    root: str | None = None  # the folder reads are confined to (None: path is read as it is)


def load_rows(ann_file: str, image_folder: str) -> tuple[list[ImageRow], int, int]:
    """``(image rows in file order, number of rows, rows without an image)``.

    Raises ``ValueError`` naming the row index for a row without ``id`` or with
    an ``image`` that is not one path, and naming the id for a duplicate.
    """
    with open(ann_file, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{ann_file}: expected a JSON list of rows, got {type(data).__name__}")
    rows: list[ImageRow] = []
    seen: dict[str, int] = {}
    no_image = 0
    for r, item in enumerate(data):
        if not isinstance(item, dict) or item.get("id") is None:
            raise ValueError(f"{ann_file}: row {r} has no 'id' (got {str(item)[:200]})")
        if item.get("image") is None:
            no_image += 1  # text-only rows of an instruct mix: nothing to label
            continue
        image = item["image"]
        if not isinstance(image, str) or not image:
            raise ValueError(
                f"{ann_file}: row {r} (id {item['id']!r}) has 'image' {image!r}; expected one relative path (str)"
            )
        sid = str(item["id"])
        if sid in seen:
            raise ValueError(f"{ann_file}: duplicate sample id {sid!r} in rows {seen[sid]} and {r}; ids must be unique")
        seen[sid] = r
        rows.append(ImageRow(r, sid, image, os.path.join(image_folder, image), image_folder))
    return rows, len(data), no_image


class LlavaImageDataset(Dataset):
    """Decodes the images of ``rows``: ``(index, Float[3, S, S] or None, reason or None)``.

    Images are opened as training opens them (``open_image``: 16-bit and alpha
    converted, memory bounded by ``max_pixels``/``max_aspect``, paths confined to
    the row's ``root`` unless ``allow_outside_root``). A failure is returned, not
    raised, so that one bad file never kills a DataLoader worker (and with it the run).
    """

    def __init__(self, rows: Sequence[ImageRow], transform, **image_rules) -> None:
        self.rows = rows
        self.transform = transform
        self.image_rules = image_rules  # open_image's allow_outside_root, max_pixels, max_aspect

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row = self.rows[index]
        try:
            image = open_image(row.image if row.root is not None else row.path, root=row.root, **self.image_rules)
            return index, self.transform(image), None
        except ImageError as e:  # the reason is training's skip reason
            return index, None, f"{e.reason}: {e.detail}"
        except Exception as e:  # any transform error of one file is that file's failure
            return index, None, f"{type(e).__name__}: {e}"


def collate_images(batch):
    """``(Long[B] dataset indices of decoded images, Float[B, 3, S, S] or None, [(index, reason)])``."""
    ok = [(i, x) for i, x, err in batch if err is None]
    failed = [(i, err) for i, _, err in batch if err is not None]
    index = torch.tensor([i for i, _ in ok], dtype=torch.long)
    images = torch.stack([x for _, x in ok]) if ok else None
    return index, images, failed


# --- output folders (analyze_labels, visualize_alignment) ----------------------
def check_out_dir(out: str, force: bool) -> Path:
    """Create ``out``; refuse one that already holds files unless ``force``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out!r} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ValueError(f"--out {out!r} already holds files; pass --force to write into it anyway")
    path.mkdir(parents=True, exist_ok=True)
    return path
