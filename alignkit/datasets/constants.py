"""LLaVA's placeholder ids and the reasons a sample is skipped.

``IMAGE_TOKEN_INDEX`` stands in ``input_ids`` where the image goes; the model
replaces it by the visual tokens. ``IGNORE_INDEX`` marks label positions that
carry no loss (prompt, image, padding). Both are LLaVA's values.

A sample that cannot be trained on raises ``BadSample(reason, detail)``; the
dataset counts it under ``reason`` and serves another sample instead.
"""

from __future__ import annotations

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
IMAGE_TOKEN = "<image>"

# Why a sample was skipped; the keys of ``LLaVADataset.skip_counts()``.
SKIP_REASONS = {
    "bad_conversation": "the conversation is malformed: missing fields, unknown or non-alternating roles, "
    "no assistant reply, or a shape the template does not accept",
    "empty_message": "a caption or reply (or a human turn without the image) is empty or blank",
    "no_image_token": "the row has an image but no <image> in its conversation",
    "extra_image_token": "more than one <image>, an <image> in a reply, or an <image> in a text-only row",
    "missing_image": "the image file does not exist",
    "unreadable_image": "the image file exists but cannot be decoded (corrupt or truncated)",
    "too_long": "the sequence (visual tokens included) is longer than max_length",
    "mismatch": "the label mask does not line up with the tokens (a mask boundary falls inside a token)",
    "no_supervised_tokens": "no position is left with a label (nothing to learn from)",
    "missing_labels": "a label cache is configured but holds no labels for this sample id",
}


class BadSample(ValueError):
    """A sample that cannot be trained on; ``reason`` is a key of ``SKIP_REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {sorted(SKIP_REASONS)}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
