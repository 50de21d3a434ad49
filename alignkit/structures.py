"""The data passed between alignkit's pieces: ``PatchLabels`` and ``PairSet``.

Shape letters (used everywhere): B batch, P patches per image (grid H×W, no CLS
token), K top-n, M candidate pairs, N sampled pairs, V word-list size.

- ``PatchLabels`` is what a labeler (or a label cache) produces: the top-K words
  of every patch of every image, with their scores.
- ``PairSet`` is a flat list of (image, patch, word, score) candidates. Samplers
  map a ``PairSet`` to a subset of itself; the aligner gathers visual tokens
  with ``(batch, patch)`` and word embeddings with ``word``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from alignkit.utils.validate import check_grid

EMPTY_WORD = -1  # word id of an empty top-n slot


@dataclass
class PatchLabels:
    """Top-K word labels of every patch.

    Attributes:
        words: Long[B, P, K] word ids into the word list, ``-1`` in empty slots.
        scores: Float[B, P, K] similarity scores, sorted descending along K,
            ``0`` in empty slots.
        grid: (H, W) patch grid, ``H * W == P``; patch ``p`` sits at row
            ``p // W``, column ``p % W``.
    """

    words: Tensor
    scores: Tensor
    grid: tuple[int, int]

    def __post_init__(self) -> None:
        self.grid = check_grid(self.grid)
        if self.words.dim() != 3:
            raise ValueError(f"PatchLabels.words must be (B, P, K), got shape {tuple(self.words.shape)}")
        if self.scores.shape != self.words.shape:
            raise ValueError(
                f"PatchLabels.scores shape {tuple(self.scores.shape)} != words shape {tuple(self.words.shape)}"
            )
        if self.words.dtype.is_floating_point or self.words.dtype == torch.bool:
            raise ValueError(f"PatchLabels.words must be an integer tensor, got {self.words.dtype}")
        if not self.scores.dtype.is_floating_point:
            raise ValueError(f"PatchLabels.scores must be a float tensor, got {self.scores.dtype}")
        h, w = self.grid
        if self.words.shape[1] != h * w:
            raise ValueError(
                f"PatchLabels has P={self.words.shape[1]} patches but grid {self.grid} holds {h * w}"
            )

    @property
    def batch_size(self) -> int:
        return self.words.shape[0]

    @property
    def num_patches(self) -> int:
        return self.words.shape[1]

    @property
    def top_n(self) -> int:
        return self.words.shape[2]

    def to(self, device) -> "PatchLabels":
        return PatchLabels(self.words.to(device), self.scores.to(device), self.grid)

    def __getitem__(self, index) -> "PatchLabels":
        """Select images (an int, slice, index or mask over B)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return PatchLabels(self.words[index], self.scores[index], self.grid)

    @staticmethod
    def cat(items: "list[PatchLabels]") -> "PatchLabels":
        """Concatenate along B (all items must share their grid and K)."""
        if not items:
            raise ValueError("PatchLabels.cat needs at least one item")
        grids = {it.grid for it in items}
        if len(grids) != 1:
            raise ValueError(f"PatchLabels.cat: items have different grids {sorted(grids)}")
        return PatchLabels(
            torch.cat([it.words for it in items]), torch.cat([it.scores for it in items]), items[0].grid
        )

    def check(self, num_words: int | None = None) -> "PatchLabels":
        """Raise ``ValueError`` for NaN scores or word ids outside ``[-1, num_words)``."""
        if torch.isnan(self.scores).any():
            raise ValueError("PatchLabels.scores contains NaN")
        if self.words.numel():
            lo, hi = int(self.words.min()), int(self.words.max())
            if lo < EMPTY_WORD:
                raise ValueError(f"PatchLabels.words has id {lo}; ids are >= 0, or -1 for an empty slot")
            if num_words is not None and hi >= num_words:
                raise ValueError(f"PatchLabels.words has id {hi}, past the word list of {num_words} words")
        return self


@dataclass
class PairSet:
    """A flat set of M (image, patch, word, score) candidate pairs.

    Attributes:
        batch: Long[M] image index in the batch.
        patch: Long[M] patch index ``row * W + col`` in that image.
        word: Long[M] word id (>= 0).
        score: Float[M] the labeler's similarity for (patch, word).
    """

    batch: Tensor
    patch: Tensor
    word: Tensor
    score: Tensor

    def __post_init__(self) -> None:
        fields = {"batch": self.batch, "patch": self.patch, "word": self.word, "score": self.score}
        for name, t in fields.items():
            if t.dim() != 1:
                raise ValueError(f"PairSet.{name} must be 1-D (M,), got shape {tuple(t.shape)}")
        lengths = {name: t.shape[0] for name, t in fields.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"PairSet fields must share one length M, got {lengths}")
        for name in ("batch", "patch", "word"):
            if fields[name].dtype.is_floating_point or fields[name].dtype == torch.bool:
                raise ValueError(f"PairSet.{name} must be an integer tensor, got {fields[name].dtype}")
        if not self.score.dtype.is_floating_point:
            raise ValueError(f"PairSet.score must be a float tensor, got {self.score.dtype}")

    def __len__(self) -> int:
        return self.batch.shape[0]

    @property
    def device(self) -> torch.device:
        return self.batch.device

    @classmethod
    def empty(cls, device=None, score_dtype=torch.float32) -> "PairSet":
        z = torch.zeros(0, dtype=torch.long, device=device)
        return cls(z, z.clone(), z.clone(), torch.zeros(0, dtype=score_dtype, device=device))

    @classmethod
    def from_labels(cls, labels: PatchLabels) -> "PairSet":
        """Expand every non-empty slot of ``labels`` into a pair (row-major order)."""
        b, p, k = labels.words.shape
        keep = labels.words.reshape(-1) != EMPTY_WORD  # (B*P*K,)
        flat = keep.nonzero().squeeze(1)
        batch = torch.div(flat, p * k, rounding_mode="floor")
        patch = torch.div(flat, k, rounding_mode="floor") % p
        return cls(
            batch=batch,
            patch=patch,
            word=labels.words.reshape(-1)[flat].long(),
            score=labels.scores.reshape(-1)[flat],
        )

    def select(self, index: Tensor) -> "PairSet":
        """The pairs at ``index`` (a Long index or a Bool mask over M)."""
        return PairSet(self.batch[index], self.patch[index], self.word[index], self.score[index])

    def to(self, device) -> "PairSet":
        return PairSet(self.batch.to(device), self.patch.to(device), self.word.to(device), self.score.to(device))

    def check(
        self, num_words: int | None = None, num_patches: int | None = None, batch_size: int | None = None
    ) -> "PairSet":
        """Raise ``ValueError`` naming the field for NaN scores or out-of-range ids."""
        if torch.isnan(self.score).any():
            raise ValueError("PairSet.score contains NaN")
        for name, t, limit in (
            ("batch", self.batch, batch_size),
            ("patch", self.patch, num_patches),
            ("word", self.word, num_words),
        ):
            if not len(self):
                break
            lo, hi = int(t.min()), int(t.max())
            if lo < 0:
                raise ValueError(f"PairSet.{name} has negative id {lo}")
            if limit is not None and hi >= limit:
                raise ValueError(f"PairSet.{name} has id {hi}, expected ids < {limit}")
        return self
