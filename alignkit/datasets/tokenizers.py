"""Tokenizer loading, and a SentencePiece tokenizer that behaves like LLaVA-1.5's.

LLaVA-1.5 tokenized Vicuna text with transformers 4's slow ``LlamaTokenizer``:
SentencePiece itself, called once per stretch of text between special tokens,
each stretch getting SentencePiece's dummy prefix ``▁`` ("legacy" behaviour).
transformers 5 has no such class any more: ``transformers.LlamaTokenizer`` is
the Rust-backed tokenizer whatever ``use_fast`` says; it honours ``legacy``
after special tokens but splits runs of spaces differently from SentencePiece
(``"a  b"`` is ``▁a ▁ ▁b`` for SentencePiece, ``▁a ▁▁ b`` for it). Its generic
``SentencePieceBackend`` neither adds BOS nor prefixes the start of the text
when ``legacy=False``. ``SentencePieceTokenizer`` below is the thin class the
templates need, on ``sentencepiece`` directly:

- ``legacy=True``: every stretch between special tokens is ``sp.encode(stretch)``,
  so ``"</s>USER"`` gives ``</s> ▁US ER`` (two tokens for "USER" with Llama's vocabulary).
- ``legacy=False``: only the start of the text gets the dummy prefix; a stretch
  right after a special token is encoded without it, so ``"</s>USER"`` gives
  ``</s> USER`` (one token) — transformers' non-legacy Llama behaviour.

``load_tokenizer`` picks between it and Hugging Face's ``AutoTokenizer``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from alignkit.registry import FUNCTIONS
from alignkit.utils.validate import check_bool

SPIECE_UNDERLINE = "▁"
BACKENDS = ("auto", "sentencepiece", "hf")


class SentencePieceTokenizer:
    """A Llama-style tokenizer on a SentencePiece model (see the module docstring).

    Implements the part of the Hugging Face tokenizer API that alignkit uses:
    ``tok(text_or_texts, add_special_tokens=True)["input_ids"]``, ``encode``,
    ``decode``, ``tokenize``, ``convert_tokens_to_ids``/``convert_ids_to_tokens``,
    the ``*_token`` / ``*_token_id`` attributes and ``len(tok)``.

    Args:
        model_file: path of the SentencePiece ``.model`` file.
        legacy: the dummy-prefix rule after special tokens (module docstring).
            ``True`` reproduces LLaVA-1.5's token ids.
        bos_token, eos_token, unk_token: token strings; by default the model's
            own BOS/EOS/UNK pieces.
        pad_token: the padding token; by default ``unk_token``, as LLaVA sets it.
        additional_special_tokens: more pieces of the model to treat as atomic
            special tokens when they appear in text.
        add_bos_token, add_eos_token: what ``add_special_tokens=True`` adds.
        model_max_length: carried for callers that read it.
    """

    padding_side = "right"

    def __init__(
        self,
        model_file: str | os.PathLike,
        *,
        legacy: bool = True,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
        pad_token: str | None = None,
        additional_special_tokens: Sequence[str] = (),
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        model_max_length: int | None = None,
    ) -> None:
        check_bool("legacy", legacy)
        import sentencepiece as spm

        self.model_file = str(model_file)
        self.legacy = legacy
        self.add_bos_token = bool(add_bos_token)
        self.add_eos_token = bool(add_eos_token)
        self.model_max_length = model_max_length
        self._sp = spm.SentencePieceProcessor(model_file=self.model_file)
        # The same model without the dummy prefix, for stretches after a special token.
        self._sp_bare = self._sp if legacy else self._without_dummy_prefix(self._sp)

        def piece(i: int) -> str | None:
            return self._sp.id_to_piece(i) if i >= 0 else None

        self.bos_token = bos_token if bos_token is not None else piece(self._sp.bos_id())
        self.eos_token = eos_token if eos_token is not None else piece(self._sp.eos_id())
        self.unk_token = unk_token if unk_token is not None else piece(self._sp.unk_id())
        self.pad_token = pad_token if pad_token is not None else self.unk_token
        self.additional_special_tokens = list(additional_special_tokens)
        specials = [self.bos_token, self.eos_token, self.unk_token, self.pad_token, *self.additional_special_tokens]
        self._special_ids: dict[str, int] = {}
        for tok in specials:
            if tok is None:
                continue
            tid = self._sp.piece_to_id(tok)
            if self._sp.id_to_piece(tid) != tok:
                raise ValueError(f"special token {tok!r} is not a piece of the SentencePiece model {self.model_file}")
            self._special_ids[tok] = tid
        # Longest first, so a token that is a prefix of another never wins.
        alternation = "|".join(re.escape(t) for t in sorted(self._special_ids, key=len, reverse=True))
        self._split_re = re.compile(f"({alternation})")

    @staticmethod
    def _without_dummy_prefix(sp):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2  # needs protobuf

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(sp.serialized_model_proto())
        proto.normalizer_spec.add_dummy_prefix = False
        return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> "SentencePieceTokenizer":
        """Load from a ``.model`` file, or a folder with ``tokenizer.model`` and,
        optionally, ``tokenizer_config.json`` / ``special_tokens_map.json`` (token
        strings, ``add_bos_token``, ``add_eos_token``, ``model_max_length``).
        ``legacy`` is never read from the folder: pass it (default ``True``).
        """
        path = Path(path)
        if path.is_file():
            return cls(path, **overrides)
        model_file = path / "tokenizer.model"
        if not model_file.is_file():
            raise ValueError(f"path {str(path)!r} has no tokenizer.model (a SentencePiece model) to load")
        kwargs: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (path / name).is_file():
                cfg = json.loads((path / name).read_text())
                for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
                    value = cfg.get(key)
                    if isinstance(value, dict):  # a serialised AddedToken
                        value = value.get("content")
                    if isinstance(value, str):
                        kwargs[key] = value
                for key in ("add_bos_token", "add_eos_token"):
                    if isinstance(cfg.get(key), bool):
                        kwargs[key] = cfg[key]
                if isinstance(cfg.get("model_max_length"), int):
                    kwargs["model_max_length"] = cfg["model_max_length"]
        kwargs.update(overrides)
        return cls(model_file, **kwargs)

    # --- ids of the special tokens -------------------------------------------
    def _id(self, tok: str | None) -> int | None:
        return None if tok is None else self._special_ids[tok]

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._id(self.unk_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def all_special_ids(self) -> list[int]:
        return list(self._special_ids.values())

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return {self._sp.id_to_piece(i): i for i in range(self.vocab_size)}

    # --- encoding --------------------------------------------------------------
    def _pieces(self, text: str) -> list[tuple[str, bool]]:
        """(stretch, is_special) in order; empty stretches dropped."""
        parts = self._split_re.split(text) if self._special_ids else [text]
        return [(p, p in self._special_ids) for p in parts if p]

    def _encode_plain(self, text: str, out_type) -> list:
        out = []
        if not self.legacy:
            text = text.replace(SPIECE_UNDERLINE, " ")
        for pos, (part, special) in enumerate(self._pieces(text)):
            if special:
                out.append(self._special_ids[part] if out_type is int else part)
            elif self.legacy or pos == 0:
                out.extend(self._sp.encode(part, out_type=out_type))
            else:
                out.extend(self._sp_bare.encode(part, out_type=out_type))
        return out

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` (no BOS/EOS)."""
        return self._encode_plain(text, str)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self._encode_plain(text, int)
        if add_special_tokens:
            if self.add_bos_token and self.bos_token is not None:
                ids = [self.bos_token_id] + ids
            if self.add_eos_token and self.eos_token is not None:
                ids = ids + [self.eos_token_id]
        return ids

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True, **unused) -> dict:
        from transformers import BatchEncoding

        if isinstance(text, str):
            return BatchEncoding({"input_ids": self.encode(text, add_special_tokens)})
        return BatchEncoding({"input_ids": [self.encode(t, add_special_tokens) for t in text]})

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]):
        if isinstance(tokens, str):
            return self._sp.piece_to_id(tokens)
        return [self._sp.piece_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]):
        if isinstance(ids, int):
            return self._sp.id_to_piece(ids)
        return [self._sp.id_to_piece(int(i)) for i in ids]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        special = set(self._special_ids.values())
        out, run = [], []
        for i in (int(x) for x in ids):
            if i in special:
                out.append(self._sp.decode(run))
                run = []
                if not skip_special_tokens:
                    out.append(self._sp.id_to_piece(i))
            else:
                run.append(i)
        out.append(self._sp.decode(run))
        return "".join(out)

    def __repr__(self) -> str:
        return (
            f"SentencePieceTokenizer({self.model_file!r}, legacy={self.legacy}, vocab_size={self.vocab_size}, "
            f"bos={self.bos_token!r}, eos={self.eos_token!r}, pad={self.pad_token!r})"
        )


# --- loading -------------------------------------------------------------------
_TOKENIZER_FILES = ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def _local_path(name_or_path: str) -> Path:
    """A local file/folder as is; a hub name through the hub cache (offline when HF_HUB_OFFLINE=1)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(name_or_path), allow_patterns=_TOKENIZER_FILES))


def _auto_backend(path: Path) -> str:
    # Checkpoints that ship only a SentencePiece model (Vicuna-1.5, Llama-2) were
    # tokenized by the slow tokenizer; anything with a tokenizer.json by Rust.
    if path.is_file():  # a bare file can only be a SentencePiece model here
        return "sentencepiece"
    if path.is_dir() and (path / "tokenizer.model").is_file() and not (path / "tokenizer.json").is_file():
        return "sentencepiece"
    return "hf"


def _load_sentencepiece(path: Path, legacy: bool, pad_token: str | None, **kwargs):
    if pad_token is not None:
        kwargs["pad_token"] = pad_token
    return SentencePieceTokenizer.from_pretrained(path, legacy=legacy, **kwargs)


def _load_hf(path: Path, legacy: bool, pad_token: str | None, **kwargs):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), legacy=legacy, **kwargs)
    if pad_token is not None:
        tok.pad_token = pad_token
    elif tok.pad_token is None:
        # LLaVA pads with unk; tokenizers without unk (byte-level BPE) pad with eos.
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    return tok


_LOADERS = {"sentencepiece": _load_sentencepiece, "hf": _load_hf}


def load_tokenizer(
    name_or_path: str | os.PathLike,
    backend: str = "auto",
    legacy: bool = True,
    pad_token: str | None = None,
    **kwargs,
):
    """Load a tokenizer for the templates.

    Args:
        name_or_path: a local folder, a SentencePiece ``.model`` file, or a hub
            name (resolved through the hub cache; offline runs need it cached).
        backend: ``'sentencepiece'`` (``SentencePieceTokenizer``, LLaVA-1.5's
            token ids), ``'hf'`` (``transformers.AutoTokenizer``) or ``'auto'``:
            sentencepiece for a file (a SentencePiece model) or a folder holding
            ``tokenizer.model`` but no ``tokenizer.json`` (Vicuna-1.5), hf otherwise.
        legacy: the dummy-prefix rule after special tokens; ``True`` (default)
            is what LLaVA-1.5 trained with, whatever the folder's config says.
        pad_token: the padding token; by default the tokenizer's own, else
            ``unk`` (LLaVA's choice), else ``eos``.
        **kwargs: passed to the backend's constructor.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = _local_path(str(name_or_path))
    if backend == "auto":
        backend = _auto_backend(path)
    return _LOADERS[backend](path, legacy, pad_token, **kwargs)


def build_tokenizer(cfg):
    """The one way a config gives a tokenizer (to the dataset and to the model alike).

    ``cfg`` may be a built tokenizer (anything with ``encode``), a str or path
    (a local folder, a ``.model`` file or a hub name, through :func:`load_tokenizer`),
    a dict without ``type`` (the keyword arguments of :func:`load_tokenizer`), or a
    dict with ``type`` naming a function registered in ``FUNCTIONS`` that returns
    one (``dict(type='demo_tokenizer')``). None gives None.
    """
    if cfg is None:
        return None
    if isinstance(cfg, (str, os.PathLike)):
        return load_tokenizer(cfg)
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        return FUNCTIONS.build(cfg) if "type" in cfg else load_tokenizer(**cfg)
    if hasattr(cfg, "encode"):
        return cfg
    raise ValueError(
        f"tokenizer must be a tokenizer, a path or hub name, or a config dict, got {type(cfg).__name__}"
    )
