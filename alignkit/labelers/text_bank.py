"""The text bank: (V, C) L2-normalised text features of a word list, built once, cached on disk.

Building: every word goes through the prompt (``'{}'`` = the bare word), the
model's tokenizer and the text tower, in batches. The context is trimmed to
what the batch needs: open_clip pads every word to 77 tokens, a word needs
~3-8. Trimming is exact only where the pooled token cannot see the padding —
a causal mask and a pooled position inside the kept prefix ('argmax' = CLIP's
EOT, 'eos', 'first'); bidirectional towers (SigLIP: no causal mask, pools the
*last* position of the padded sequence) are encoded at full length. Words are
sorted by token length before batching so most batches are short.

Caching: one safetensors file per key, ``<cache_dir>/<key>.safetensors``, the
key a sha256 of what determines the bank (model name, weights identity, word
list sha256, prompt, precision, format version). The file stores its key
fields, shape and a sha256 of the tensor bytes; a file that fails to load, or
whose key, shape or checksum disagrees, is logged and rebuilt, never trusted.
Writes go to a temp file in the same directory and ``os.replace`` it, so a
crash never leaves a half-written bank and concurrent builders do not clash.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from alignkit.utils.io import atomic_path

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_ENV = "ALIGNKIT_CACHE_DIR"  # root of alignkit's caches; text banks go in <root>/text_banks


def default_cache_dir() -> Path:
    """``$ALIGNKIT_CACHE_DIR/text_banks``, else ``$XDG_CACHE_HOME/alignkit/text_banks``, else ``~/.cache/...``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "alignkit")
    return Path(root) / "text_banks"


# --------------------------------------------------------------------------- text tower
class _TextTower:
    """The parts of an open_clip text tower, whichever of its two layouts the model uses.

    ``CLIP`` keeps the tower's modules on the model itself; ``CustomTextCLIP``
    keeps a ``TextTransformer`` in ``model.text``. HF text towers have neither
    and are not trimmed.
    """

    def __init__(self, model) -> None:
        from open_clip.transformer import TextTransformer

        text = getattr(model, "text", None)
        if isinstance(text, TextTransformer):
            src, self.pool_type, self.eos_id = text, text.pool_type, getattr(text, "eos_id", None)
            self.cls_emb, self.use_pad_mask = text.cls_emb, getattr(text, "use_pad_mask", False)
        elif hasattr(model, "token_embedding") and hasattr(model, "transformer"):
            src, self.pool_type = model, getattr(model, "text_pool_type", "argmax")
            self.eos_id = getattr(model, "text_eos_id", None)
            self.cls_emb, self.use_pad_mask = None, False
        else:
            raise TypeError("not an open_clip native text tower")
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = src.text_projection
        self.attn_mask = src.attn_mask

    def pooled_index(self, tokens: Tensor) -> Tensor | None:
        """(N,) position each row is pooled from, or None when padding can reach it."""
        if self.attn_mask is None or self.cls_emb is not None or self.use_pad_mask:
            return None  # bidirectional or CoCa-style: the pooled token sees every position
        # Positions after the pooled one cannot influence it through a causal mask.
        pick = {
            "argmax": lambda t: t.argmax(dim=-1),
            "eos": lambda t: (t == self.eos_id).int().argmax(dim=-1),
            "first": lambda t: torch.zeros(t.shape[0], dtype=torch.long, device=t.device),
        }.get(self.pool_type)
        return None if pick is None else pick(tokens)

    def encode(self, tokens: Tensor) -> Tensor:
        """Text features of ``tokens`` (N, L) with a context of L (<= the model's)."""
        from open_clip.transformer import text_global_pool

        length = tokens.shape[1]
        cast = self.transformer.get_cast_dtype()
        x = self.token_embedding(tokens).to(cast)  # (N, L) -> (N, L, W)
        x = x + self.positional_embedding[:length].to(cast)
        # The causal mask and the positional embedding are sliced to the same L.
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)  # (N, W)
        if self.text_projection is not None:
            if isinstance(self.text_projection, torch.nn.Linear):
                x = self.text_projection(x)
            else:
                x = x @ self.text_projection  # (N, W) -> (N, C)
        return x


def trimmed_length(model, tokens: Tensor) -> int | None:
    """Context length that encodes ``tokens`` exactly, or None if it must stay full."""
    try:
        tower = _TextTower(model)
    except TypeError:
        return None
    idx = tower.pooled_index(tokens)
    return None if idx is None else int(idx.max()) + 1


@torch.no_grad()
def encode_text_tokens(model, tokens: Tensor, trim: bool = True) -> Tensor:
    """Unnormalised text features (N, C); trims the context where that is exact."""
    length = trimmed_length(model, tokens) if trim else None
    if length is None or length >= tokens.shape[1]:
        return model.encode_text(tokens)
    return _TextTower(model).encode(tokens[:, :length])


def check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or prompt.count("{}") != 1:
        raise ValueError(f"prompt must be a str with exactly one '{{}}' for the word, got {prompt!r}")
    try:
        prompt.format("word")
    except (IndexError, KeyError, ValueError) as err:
        raise ValueError(f"prompt {prompt!r} is not a valid format string: {err}") from None
    return prompt


@torch.no_grad()
def build_text_bank(
    model,
    tokenizer: Callable[[Sequence[str]], Tensor],
    words: Sequence[str],
    prompt: str = "{}",
    batch_size: int = 1024,
    device=None,
    trim: bool = True,
) -> Tensor:
    """(V, C) fp32 L2-normalised text features of ``prompt.format(word)`` for every word."""
    check_prompt(prompt)
    if device is None:
        device = next(model.parameters()).device
    tokens = tokenizer([prompt.format(w) for w in words])  # (V, context)
    if trim:
        try:
            idx = _TextTower(model).pooled_index(tokens)
        except TypeError:
            idx = None
        # Short words together: each batch is trimmed to its own longest word.
        order = torch.argsort(idx, stable=True) if idx is not None else torch.arange(len(words))
    else:
        order = torch.arange(len(words))
    out: Tensor | None = None
    for start in range(0, len(words), batch_size):
        rows = order[start:start + batch_size]
        feats = encode_text_tokens(model, tokens[rows].to(device), trim=trim).float()
        feats = F.normalize(feats, dim=-1).cpu()
        if out is None:
            out = torch.empty(len(words), feats.shape[1], dtype=torch.float32)
        out[rows] = feats
    return out


# --------------------------------------------------------------------------- disk cache
def bank_key(fields: dict) -> str:
    """sha256 of the JSON of the fields that determine a bank."""
    payload = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _tensor_sha256(t: Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _read_bank(path: Path, key: str, num_words: int | None) -> Tensor | None:
    """The cached bank at ``path``, or None (with a warning) when it cannot be trusted."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            bank = f.get_tensor("bank")
    except Exception as err:  # any read failure means: rebuild
        logger.warning("text bank %s is unreadable (%s: %s); rebuilding", path, type(err).__name__, err)
        return None
    shape = list(bank.shape)
    problems = []
    if meta.get("key") != key:
        problems.append(f"stored key {meta.get('key')!r} != expected {key!r}")
    if meta.get("shape") != json.dumps(shape):
        problems.append(f"stored shape {meta.get('shape')} != tensor shape {shape}")
    if bank.dim() != 2 or bank.dtype != torch.float32:
        problems.append(f"expected a 2-D float32 tensor, got {bank.dtype} {shape}")
    elif num_words is not None and shape[0] != num_words:
        problems.append(f"{shape[0]} rows != {num_words} words")
    elif meta.get("sha256") != _tensor_sha256(bank):
        problems.append("checksum mismatch")
    if problems:
        logger.warning("text bank %s is stale or corrupt (%s); rebuilding", path, "; ".join(problems))
        return None
    return bank


def _write_bank(path: Path, key: str, fields: dict, bank: Tensor) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    bank = bank.detach().to("cpu", torch.float32).contiguous()
    meta = {
        "key": key,
        "fields": json.dumps(fields, sort_keys=True),
        "shape": json.dumps(list(bank.shape)),
        "sha256": _tensor_sha256(bank),
        "format": str(FORMAT_VERSION),
    }
    with atomic_path(path, unique=True) as tmp:  # ranks may build the same bank at once
        save_file({"bank": bank}, str(tmp), metadata=meta)


def load_or_build_bank(
    fields: dict,
    build: Callable[[], Tensor],
    cache_dir: str | os.PathLike | None = None,
    num_words: int | None = None,
) -> tuple[Tensor, dict]:
    """The bank for ``fields`` from ``cache_dir``, built with ``build()`` and stored when absent.

    Args:
        fields: JSON-able values that determine the bank (hashed into the key).
        build: computes the (V, C) fp32 bank.
        cache_dir: directory of bank files; None for :func:`default_cache_dir`.
        num_words: expected V, checked against a cached file.

    Returns:
        ``(bank, info)`` with info ``{'path', 'key', 'built'}``.
    """
    key = bank_key(fields)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = directory / f"{key}.safetensors"
    if path.exists():
        bank = _read_bank(path, key, num_words)
        if bank is not None:
            logger.info("text bank loaded from %s", path)
            return bank, {"path": str(path), "key": key, "built": False}
    bank = build().detach().to("cpu", torch.float32).contiguous()
    try:
        _write_bank(path, key, fields, bank)
        logger.info("text bank (%d × %d) written to %s", bank.shape[0], bank.shape[1], path)
    except OSError as err:  # a read-only cache must not stop labelling
        logger.warning("could not write text bank to %s (%s); continuing without the cache", path, err)
    return bank, {"path": str(path), "key": key, "built": True}
