"""``llava_collate``: pad a list of ``LLaVADataset`` samples into one batch.

The output has mmengine's shape, so ``model.train_step`` passes it on as
``model(**batch, mode='loss')`` after the data preprocessor has moved every
tensor to the device::

    dict(
        inputs=dict(
            input_ids      Long[B, T]   right-padded with the pad id; IMAGE_TOKEN_INDEX (-200) where the image goes
            attention_mask Bool[B, T]   True on real tokens
            labels         Long[B, T]   IGNORE_INDEX (-100) on prompt, image and padding
            images         Float[B, 3, H, W]   zeros for text-only samples
            has_image      Bool[B]
        ),
        data_samples=dict(
            sample_ids     list[str]    the rows' ``id``
            image_sizes    list[(W, H) | None]  original sizes
            patch_labels   PatchLabels (B rows, empty for text-only samples) or None
                           (not moved by mmengine's preprocessor: call ``.to(device)``)
            skipped        dict[str, int]  samples skipped (and replaced) for this batch, by reason
            num_truncated  int          samples cut to max_length (``truncate=True`` only)
        ),
    )

T is the longest sample of the batch; nothing is truncated here (the dataset
already enforced ``max_length``).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from alignkit.datasets.constants import IGNORE_INDEX
from alignkit.registry import FUNCTIONS
from alignkit.structures import PatchLabels

PADDING_SIDES = ("right", "left")


@FUNCTIONS.register_module()
def llava_collate(batch: Sequence[dict], pad_token_id: int | None = None, padding_side: str = "right") -> dict:
    """Collate ``LLaVADataset`` samples (module docstring).

    Args:
        batch: samples from ``LLaVADataset.__getitem__``.
        pad_token_id: the id that fills ``input_ids`` past a sample's end; by
            default the ``pad_token_id`` the samples carry (the tokenizer's).
        padding_side: ``'right'`` (LLaVA's, for training) or ``'left'``.
    """
    if not batch:
        raise ValueError("llava_collate needs at least one sample, got an empty batch")
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if pad_token_id is None:
        carried = {s.get("pad_token_id") for s in batch}
        if len(carried) != 1 or None in carried:
            raise ValueError(f"pass pad_token_id: the samples carry pad ids {sorted(map(str, carried))}")
        pad_token_id = carried.pop()

    lengths = [len(s["input_ids"]) for s in batch]
    b, t = len(batch), max(lengths)
    input_ids = torch.full((b, t), int(pad_token_id), dtype=torch.long)
    labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros(b, t, dtype=torch.bool)
    for i, (s, n) in enumerate(zip(batch, lengths, strict=True)):
        if len(s["labels"]) != n:
            raise ValueError(f"sample {s.get('sample_id')!r} has {n} input_ids but {len(s['labels'])} labels")
        cols = slice(0, n) if padding_side == "right" else slice(t - n, t)
        input_ids[i, cols] = s["input_ids"]
        labels[i, cols] = s["labels"]
        attention_mask[i, cols] = True

    shapes = {tuple(s["image"].shape) for s in batch}
    if len(shapes) != 1:
        raise ValueError(f"samples have images of different shapes {sorted(shapes)}; use one image processor")
    images = torch.stack([s["image"] for s in batch])  # (B, 3, H, W)

    carried_labels = [s.get("patch_labels") for s in batch]
    if all(x is None for x in carried_labels):
        patch_labels = None
    elif any(x is None for x in carried_labels):
        raise ValueError("some samples carry patch_labels and some do not; configure one label cache for all")
    else:
        patch_labels = PatchLabels.cat(carried_labels)

    skipped: Counter = Counter()
    for s in batch:
        skipped.update(s.get("skipped", {}))
    return dict(
        inputs=dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            images=images,
            has_image=torch.tensor([bool(s["has_image"]) for s in batch]),
        ),
        data_samples=dict(
            sample_ids=[s["sample_id"] for s in batch],
            image_sizes=[s.get("image_size") for s in batch],
            patch_labels=patch_labels,
            skipped=dict(skipped),
            num_truncated=sum(bool(s.get("truncated", False)) for s in batch),
        ),
    )
