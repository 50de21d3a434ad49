"""``HFTopNLabeler``: the top-n labeler on a Hugging Face transformers CLIP / SigLIP model.

The same contract and the same numbers as the open_clip labelers
(:class:`~alignkit.labelers.base.OpenCLIPTopNLabeler`; equal on the same
weights, ``tests/towers``): one tower forward
(:func:`alignkit.towers.transformers.forward_features`) gives the dense
embeddings, ``label`` ranks them against the cached text bank.

The text bank comes from the model's own ``get_text_features`` (or a
``CLIPTextModelWithProjection`` / ``SiglipTextModel``), tokenised the way each
family was trained: CLIP pads each batch to its longest word and passes the
attention mask (its causal mask and end-of-text pooling make that exact);
SigLIP pads every word to ``max_length`` = the text model's
``max_position_embeddings`` and passes no mask (it pools the last position,
which sees the padding — transformers' docs: "make sure to set
padding='max_length' as that's how the model was trained").
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from alignkit.labelers.base import TopNLabeler
from alignkit.labelers.text_bank import check_prompt
from alignkit.towers.transformers import (
    BACKEND,
    check_images,
    forward_features,
    get_dense_mode,
    model_kind,
    tower_grid,
    tower_image_size,
    tower_input_dtype,
)
from alignkit.towers import transformers_loader as hf_loader  # module: read at call time (import-order safe)
from alignkit.towers.transformers import text_features


def _text_max_length(text_model) -> int:
    cfg = text_model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    return int(cfg.max_position_embeddings)


@torch.no_grad()
def build_hf_text_bank(
    text_model,
    tokenizer,
    words: Sequence[str],
    prompt: str = "{}",
    batch_size: int = 1024,
    device=None,
) -> Tensor:
    """(V, C) fp32 L2-normalised text features of ``prompt.format(word)`` for every word (module docstring)."""

    check_prompt(prompt)
    if device is None:
        device = next(text_model.parameters()).device
    texts = [prompt.format(w) for w in words]
    max_length = _text_max_length(text_model)
    siglip = model_kind(text_model) == "siglip"
    if siglip:
        order = list(range(len(texts)))
    else:
        # Short words together: each batch is padded to its own longest word.
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out: Tensor | None = None
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        batch = [texts[i] for i in rows]
        if siglip:
            enc = tokenizer(batch, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
            feats = text_features(text_model, enc["input_ids"].to(device))
        else:
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            feats = text_features(text_model, enc["input_ids"].to(device), enc["attention_mask"].to(device))
        feats = F.normalize(feats.float(), dim=-1).cpu()
        if out is None:
            out = torch.empty(len(texts), feats.shape[1], dtype=torch.float32)
        out[torch.tensor(rows)] = feats
    if out is None:
        raise ValueError("the word list is empty: nothing to build a text bank from")
    return out


class HFTopNLabeler(TopNLabeler):
    """Top-n word labels of every patch from a transformers CLIP / SigLIP model and a word list.

    Args:
        model_name: hub name (``'openai/clip-vit-large-patch14-336'``) or a
            ``save_pretrained`` folder of a ``CLIPModel`` / ``SiglipModel``.
        text_model_name: a separate text model when ``model_name`` is a vision
            model (``CLIPVisionModelWithProjection``); None: the model's own.
        tokenizer: tokenizer object or name/folder; None: the text model's.
        loaded: an already loaded model
            (:class:`~alignkit.towers.transformers_loader.LoadedTransformersModel`,
            e.g. from ``wrap_transformers_model``); ``model_name`` is then only
            checked against it.
        word_list, top_n, min_score, negate, prompt, chunk_size, cache_dir,
        device, text_batch_size, topn_dtype: as in
            :class:`~alignkit.labelers.base.OpenCLIPTopNLabeler`.
        dense_mode: key of ``alignkit.towers.transformers.DENSE_MODES``.
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` weights.
    """

    def __init__(
        self,
        model_name: str | None = None,
        word_list=None,
        top_n: int = 10,
        min_score: float = 0.0,
        negate: bool = True,
        prompt: str = "{}",
        dense_mode: str = "proj",
        text_model_name: str | None = None,
        tokenizer=None,
        loaded: hf_loader.LoadedTransformersModel | None = None,
        chunk_size: int = 1024,
        cache_dir: str | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        text_batch_size: int = 1024,
        topn_dtype: str | None = None,
    ) -> None:
        self.backend = BACKEND
        self._setup(word_list, top_n, min_score, negate, prompt, chunk_size, text_batch_size, topn_dtype, device)
        self.dense_mode = get_dense_mode(dense_mode).name
        self.precision = precision
        if loaded is None:
            if model_name is None:
                raise ValueError(f"{type(self).__name__} needs model_name (hub name or folder) or loaded=")
            loaded = hf_loader.load_transformers_model(
                model_name, text_model_name=text_model_name, device=self.device, precision=precision,
                tokenizer=tokenizer,
            )
        elif not isinstance(loaded, hf_loader.LoadedTransformersModel):
            raise ValueError(f"loaded must be a LoadedTransformersModel, got {type(loaded).__name__}")
        elif model_name is not None and os.fspath(model_name) != loaded.model_name:
            raise ValueError(f"loaded holds {loaded.model_name!r}, but model_name={model_name!r}")
        elif tokenizer is not None:
            loaded.tokenizer = tokenizer
        hf_loader.check_loaded(loaded, need_text=True, dense_mode=self.dense_mode)
        self.loaded = loaded
        self.model = loaded.model
        self.text_model = loaded.text_model
        self.tokenizer = loaded.tokenizer
        self.transform = loaded.image_processor
        self.kind = model_kind(self.model)
        self.grid = tower_grid(self.model)
        self.image_size = tower_image_size(self.model)
        self.model.to(self.device)
        self.text_model.to(self.device)

        fields = {
            "backend": BACKEND,
            "model_name": loaded.model_name,
            "weights": loaded.weights_id,
            "word_list_sha256": self.word_list.sha256,
            "num_words": self.num_words,
            "prompt": self.prompt,
            "precision": precision,
            "tokenizer": type(self.tokenizer).__name__,
        }
        self._load_bank(fields, cache_dir)

    def _build_bank(self) -> Tensor:
        return build_hf_text_bank(
            self.text_model, self.tokenizer, self.words, self.prompt, batch_size=self.text_batch_size,
            device=self.device,
        )

    @torch.no_grad()
    def encode_patches(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images preprocessed with ``transform`` -> (B, P, C)."""
        check_images(self.model, images)
        _, dense = forward_features(
            self.model, images.to(self.device, tower_input_dtype(self.model)), (), self.dense_mode
        )
        return dense

    def forward_features(self, images: Tensor, feature_layers: Sequence[int] = (-2,)):
        """``towers.transformers.forward_features`` on this labeler's tower and dense mode."""
        return forward_features(self.model, images, feature_layers, self.dense_mode)

    def fingerprint(self) -> dict:
        return {
            "labeler": type(self).__name__,
            "backend": self.backend,
            "model_name": self.loaded.model_name,
            "text_model_name": self.loaded.text_model_name,
            "weights_kind": self.loaded.weights_kind,
            "weights": self.loaded.weights_id,
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
            "transform": self.transform.fingerprint(),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_name={self.loaded.model_name!r}, words={self.num_words}, "
            f"top_n={self.top_n}, min_score={self.min_score}, negate={self.negate}, "
            f"dense_mode={self.dense_mode!r}, grid={self.grid})"
        )
