"""LLaVA's placeholder ids and the reasons a sample is skipped.

``IMAGE_TOKEN_INDEX`` stands in ``input_ids`` where the image goes; the model
replaces it by the visual tokens. ``IGNORE_INDEX`` marks label positions that
carry no loss (prompt, image, padding). Both are LLaVA's values.

A sample that cannot be trained on raises ``BadSample(reason, detail)``; the
dataset counts it under ``reason`` and serves another sample instead. Any
other exception raised while preparing a row is counted too, under
``error:<ExceptionType>`` (``error:TypeError``): never lost, never fatal.
"""

from __future__ import annotations

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
IMAGE_TOKEN = "<image>"

# Why a sample was skipped; the keys of ``LLaVADataset.skip_counts()``.
SKIP_REASONS = {
    "bad_row": "the row is not a JSON object, or its 'image' is not one relative path usable as a file name",
    "bad_conversation": "the conversation is malformed: missing fields, unknown or non-alternating roles, "
    "no assistant reply, or a shape the template does not accept",
    "empty_message": "a caption or reply (or a human turn without the image) is empty or blank",
    "no_image_token": "the row has an image but no <image> in its conversation",
    "extra_image_token": "more than one <image>, an <image> in a reply, or an <image> in a text-only row",
    "missing_image": "the image file does not exist",
    "unreadable_image": "the image file exists but cannot be decoded (corrupt, truncated, float pixels)",
    "image_too_large": "the image has more pixels than max_image_pixels (and no cheap reduced decode) or an "
    "aspect ratio over max_image_aspect",
    "image_outside_root": "the image path leads outside its image folder ('..', absolute path, symlink)",
    "bad_text": "a message holds a string that is not valid Unicode text (a lone surrogate such as \\ud800)",
    "too_long": "the sequence (visual tokens included) is longer than max_length",
    "mismatch": "the label mask does not line up with the tokens (a mask boundary falls inside a token)",
    "no_supervised_tokens": "no position is left with a label (nothing to learn from)",
    "missing_labels": "a label cache is configured but holds no labels for this sample id",
}


class DataFileError(ValueError):
    """A whole file the data layer reads cannot be used (an annotation file, a label cache).

    Never a per-row problem: ``LLaVADataset`` lets it stop the run rather than
    count every row that touches the file as skipped.
    """


# Prefix of the reason an unexpected exception is counted under: ``error:TypeError``.
ERROR_PREFIX = "error:"


def is_skip_reason(reason) -> bool:
    """A key of ``SKIP_REASONS``, or ``error:<ExceptionType>``."""
    if not isinstance(reason, str):
        return False
    return reason in SKIP_REASONS or (reason.startswith(ERROR_PREFIX) and reason[len(ERROR_PREFIX):].isidentifier())


class BadSample(ValueError):
    """A sample that cannot be trained on; ``reason`` is a key of ``SKIP_REASONS`` or ``error:<ExceptionType>``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if not is_skip_reason(reason):
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {sorted(SKIP_REASONS)}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
