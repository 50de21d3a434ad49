"""The labeler contract and the open_clip top-n labeler both registered labelers share.

A labeler maps images to per-patch word labels in two steps so either step can
be fed from elsewhere:

- ``encode_patches(images) -> (B, P, C)`` dense joint-space embeddings (one
  forward of the image tower);
- ``label(dense) -> PatchLabels`` top-n words of a word list by (negated)
  cosine against the cached text bank (V, C), scores ``<= min_score`` emptied.

``labeler(images)`` does both. An MLLM that already runs the same tower for its
adapter calls :func:`alignkit.towers.open_clip.forward_features` once
and hands ``dense`` to ``label``.

Labelers are plain objects, not ``nn.Module``: their frozen CLIP weights must
not land in a training checkpoint or an optimizer's parameter list. ``label``
works on whatever device ``dense`` is on (the bank is copied there once).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch
from torch import Tensor

from alignkit.labelers.functional import cosine_topn
from alignkit.labelers.text_bank import build_text_bank, check_prompt, load_or_build_bank
from alignkit.labelers.word_list import WordList, as_word_list
from alignkit.structures import PatchLabels
from alignkit.towers.open_clip import (
    check_images,
    forward_features,
    get_dense_mode,
    tower_grid,
    tower_image_size,
    tower_input_dtype,
)
from alignkit.towers.open_clip_loader import load_open_clip
from alignkit.utils.validate import as_dtype, check_bool, check_int, check_number



class BaseLabeler(ABC):
    """What every labeler offers (see the module docstring)."""

    grid: tuple[int, int]
    word_list: WordList
    backend: str  # the library whose tower makes the labels ('open_clip', 'transformers'); in fingerprint()

    @property
    def words(self) -> tuple[str, ...]:
        return self.word_list.words

    @property
    def num_words(self) -> int:
        return len(self.word_list)

    @abstractmethod
    def encode_patches(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) preprocessed images -> (B, P, C) dense embeddings."""

    @abstractmethod
    def label(self, dense: Tensor) -> PatchLabels:
        """(B, P, C) dense embeddings -> top-n labels of every patch."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """JSON-able description of everything that determines the labels (``backend`` included).

        A label cache records it and is refused where it differs; its ``transform``
        entry must describe the image transform with ``image_size``/``size``,
        ``mean``, ``std``, ``resize_mode``, ``interpolation`` (see
        ``alignkit.labelers.cache.transform_spec``).
        """

    def __call__(self, images: Tensor) -> PatchLabels:
        return self.label(self.encode_patches(images))


class TopNLabeler(BaseLabeler):
    """What every top-n labeler shares, whatever runs its tower: argument checks, the text bank, ``label``.

    A backend subclass calls :meth:`_setup` first, then loads its model, sets
    ``grid``, and calls :meth:`_load_bank` with the fields that identify its
    bank and ``_build_bank`` defined.
    """

    def _setup(self, word_list, top_n, min_score, negate, prompt, chunk_size, text_batch_size, topn_dtype,
               device) -> None:
        self.top_n = check_int("top_n", top_n, low=1)
        self.min_score = check_number("min_score", min_score)  # -inf keeps every slot
        self.negate = check_bool("negate", negate)
        self.prompt = check_prompt(prompt)
        self.chunk_size = check_int("chunk_size", chunk_size, low=1)
        self.text_batch_size = check_int("text_batch_size", text_batch_size, low=1)
        as_dtype("topn_dtype", topn_dtype)
        self.topn_dtype = topn_dtype

        self.word_list = as_word_list(word_list)
        if self.top_n > self.num_words:
            raise ValueError(
                f"top_n={self.top_n} is larger than the word list ({self.num_words} words from "
                f"{self.word_list.source}); expected top_n <= {self.num_words}"
            )
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self._banks: dict[tuple, Tensor] = {}

    def _load_bank(self, fields: dict, cache_dir) -> None:
        self.bank, self.bank_info = load_or_build_bank(
            fields, self._build_bank, cache_dir=cache_dir, num_words=self.num_words
        )

    @abstractmethod
    def _build_bank(self) -> Tensor:
        """(V, C) fp32 L2-normalised text features of the word list."""

    def _bank_on(self, device: torch.device) -> Tensor:
        key = (device.type, device.index)
        if key not in self._banks:
            self._banks[key] = self.bank.to(device)
        return self._banks[key]

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        if self.topn_dtype is not None:
            return as_dtype("topn_dtype", self.topn_dtype)
        return torch.bfloat16 if device.type == "cuda" else torch.float32

    @property
    def embed_dim(self) -> int:
        return self.bank.shape[1]

    @torch.no_grad()
    def label(self, dense: Tensor) -> PatchLabels:
        """(B, P, C) dense embeddings (any device, any float dtype) -> PatchLabels."""
        h, w = self.grid
        if not isinstance(dense, Tensor) or dense.dim() != 3:
            shape = tuple(dense.shape) if isinstance(dense, Tensor) else type(dense).__name__
            raise ValueError(f"dense must be (B, P={h * w}, C={self.embed_dim}), got {shape}")
        if dense.shape[1] != h * w or dense.shape[2] != self.embed_dim:
            raise ValueError(
                f"dense has shape {tuple(dense.shape)}, expected (B, P={h * w}, C={self.embed_dim}) "
                f"for grid {self.grid} and this text bank"
            )
        scores, ids = cosine_topn(
            dense,
            self._bank_on(dense.device),
            self.top_n,
            min_score=self.min_score,
            negate=self.negate,
            chunk_size=self.chunk_size,
            compute_dtype=self._compute_dtype(dense.device),
        )
        return PatchLabels(words=ids, scores=scores, grid=self.grid)


class OpenCLIPTopNLabeler(TopNLabeler):
    """Top-n word labels of every patch from an open_clip model and a word list.

    Args:
        model_name: open_clip model (``'ViT-L-14-336'``), or ``'local-dir:/path'``.
        pretrained: open_clip tag (``'openai'``, needs the hub or its cache),
            a local weights file, or None for random weights.
        word_list: word file path, None for the embedded default list, a
            :class:`WordList` or a list of str.
        top_n: words kept per patch (paper: 10); must be <= V.
        min_score: slots scoring ``<= min_score`` are emptied (paper: 0).
        negate: rank by ``-cos`` (paper Eq. 6, after CLIP Surgery).
        prompt: template with one ``{}`` for the word (paper: the bare word).
        dense_mode: key of ``DENSE_MODES`` (how patch tokens reach the joint space).
        chunk_size: patches scored at once; bounds the similarity buffer to
            ``chunk_size × V``.
        cache_dir: text-bank directory; None for ``$ALIGNKIT_CACHE_DIR/text_banks``
            or ``~/.cache/alignkit/text_banks``.
        device: where the model runs; None for CUDA when available, else CPU.
        precision: open_clip precision (``'fp32'``, ``'bf16'``, ``'fp16'``, ...).
        text_batch_size: words per text-tower batch when building the bank.
        topn_dtype: dtype of the similarity search (``'float32'``,
            ``'bfloat16'``, ``'float16'``); None: fp32 on CPU, bf16 on CUDA.
            Half precision nominates candidates, fp32 rescores them.
    """

    backend = "open_clip"

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        word_list=None,
        top_n: int = 10,
        min_score: float = 0.0,
        negate: bool = True,
        prompt: str = "{}",
        dense_mode: str = "proj",
        chunk_size: int = 1024,
        cache_dir: str | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        text_batch_size: int = 1024,
        topn_dtype: str | None = None,
    ) -> None:
        self._setup(word_list, top_n, min_score, negate, prompt, chunk_size, text_batch_size, topn_dtype, device)
        self.dense_mode = get_dense_mode(dense_mode).name
        self.precision = precision
        self.loaded = load_open_clip(model_name, pretrained, device=self.device, precision=precision)
        self.model = self.loaded.model
        self.visual = self.model.visual
        get_dense_mode(self.dense_mode).check(self.visual)
        self.transform = self.loaded.transform
        self.tokenizer = self.loaded.tokenizer
        self.grid = tower_grid(self.visual)
        self.image_size = tower_image_size(self.visual)

        fields = {
            "model_name": model_name,
            "weights": self.loaded.weights_id,
            "word_list_sha256": self.word_list.sha256,
            "num_words": self.num_words,
            "prompt": self.prompt,
            "precision": precision,
        }
        self._load_bank(fields, cache_dir)

    # ------------------------------------------------------------------ building
    def _build_bank(self) -> Tensor:
        return build_text_bank(
            self.model, self.tokenizer, self.words, self.prompt, batch_size=self.text_batch_size, device=self.device
        )

    # ------------------------------------------------------------------ contract
    @torch.no_grad()
    def encode_patches(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images preprocessed with ``transform`` -> (B, P, C)."""
        check_images(self.visual, images)
        dtype = tower_input_dtype(self.visual)
        _, dense = forward_features(self.visual, images.to(self.device, dtype), (), self.dense_mode)
        return dense

    def forward_features(self, images: Tensor, feature_layers: Sequence[int] = (-2,)):
        """``towers.open_clip.forward_features`` on this labeler's tower and dense mode."""
        return forward_features(self.visual, images, feature_layers, self.dense_mode)

    def fingerprint(self) -> dict:
        cfg = dict(getattr(self.visual, "preprocess_cfg", {}) or {})
        transform = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
        return {
            "labeler": type(self).__name__,
            "backend": self.backend,
            "model_name": self.loaded.model_name,
            "pretrained": self.loaded.pretrained,
            "weights_kind": self.loaded.weights_kind,
            "weights_sha256": self.loaded.weights_sha256,
            "word_list_source": self.word_list.source,
            "word_list_sha256": self.word_list.sha256,
            "num_words": self.num_words,
            "prompt": self.prompt,
            "negate": self.negate,
            "dense_mode": self.dense_mode,
            "top_n": self.top_n,
            "min_score": self.min_score,
            "precision": self.precision,
            "image_size": list(self.image_size),
            "grid": list(self.grid),
            "embed_dim": self.embed_dim,
            "transform": transform,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_name={self.loaded.model_name!r}, pretrained={self.loaded.pretrained!r}, "
            f"words={self.num_words}, top_n={self.top_n}, min_score={self.min_score}, negate={self.negate}, "
            f"dense_mode={self.dense_mode!r}, grid={self.grid})"
        )
