"""Build a ``LLaVAModel`` for the analysis tools from a CONFIG, a CHECKPOINT, or both.

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
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
from mmengine.config import Config

from alignkit.engine.compat import load_checkpoint_file
from alignkit.engine.model_description import META_KEY, config_from_description

CONFIG_SUFFIXES = (".py", ".json", ".yaml", ".yml")


class Source(NamedTuple):
    """Where a model came from: the config (a path, or ``checkpoint '...'``: its description) and the checkpoint."""

    config: str
    checkpoint: str | None

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"config {Path(self.config).name} only: weights as the config builds them (random adapter)"
        return f"checkpoint {Path(self.checkpoint).name}"


def _is_config(path: str) -> bool:
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
    if _is_config(first):
        return Config.fromfile(first), Source(first, checkpoint)
    if checkpoint is not None:
        raise ValueError(f"got two checkpoints ({first!r}, {checkpoint!r}); expected CONFIG [CHECKPOINT] or CHECKPOINT")
    cfg = config_of_checkpoint(first)
    return cfg, Source(cfg.filename or "<checkpoint meta>", first)


def _import_and_scope(cfg: Config) -> None:
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings

    import alignkit.registry  # noqa: F401  (the 'alignkit' scope)

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
    from alignkit.registry import MODELS

    if "model" not in cfg:
        raise ValueError(f"config {cfg.filename!r} has no `model`")
    _import_and_scope(cfg)
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


def load_weights(model, checkpoint: str) -> None:
    """Load ``checkpoint``'s ``state_dict`` into ``model``, strictly; ValueError naming the first differing key."""
    ckpt = load_checkpoint_file(checkpoint, map_location="cpu")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"checkpoint {checkpoint!r} holds no state_dict")
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


def load_model(config_or_checkpoint: str, checkpoint: str | None = None, cfg_options: dict | None = None,
               device: str | torch.device = "cpu"):
    """A ``LLaVAModel`` in eval mode on ``device``, from CONFIG, CHECKPOINT or CONFIG + CHECKPOINT (module docstring)."""
    model, _, _ = load_model_and_source(config_or_checkpoint, checkpoint, cfg_options, device)
    return model


def load_model_and_source(config_or_checkpoint: str, checkpoint: str | None = None, cfg_options: dict | None = None,
                          device: str | torch.device = "cpu"):
    """``(model, Config, Source)``: :func:`load_model` plus what it was built from."""
    cfg, source = resolve(config_or_checkpoint, checkpoint)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = build_model(cfg, device)
    if source.checkpoint is not None:
        load_weights(model, source.checkpoint)
    return model, cfg, source
