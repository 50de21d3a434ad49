"""Tokenize a rendered conversation and derive its labels.

Token ids follow LLaVA's ``tokenizer_image_token``: the prompt is cut at
``<image>``, every piece is tokenized on its own (no special tokens), BOS goes
first when the template asks for it, and ``IMAGE_TOKEN_INDEX`` sits between the
pieces.

Labels: the template marks where supervision starts and stops (segment
boundaries). The tokens before a boundary are *measured*: the text up to it is
tokenized and must give exactly the tokens the whole sequence has there; if not,
a token straddles the boundary and the sample raises ``BadSample('mismatch')``
instead of training on a wrong mask.

To stay linear in the number of turns, the measurement starts at the last
end-of-turn token before the boundary (``</s>``, ``<|eot_id|>``, ... — special
tokens, where tokenization restarts): ``end-of-turn + text`` is tokenized and
the end-of-turn id dropped, so non-legacy rules ("no dummy prefix after a
special token") apply as they do in the full text. If that does not match the
full sequence, the whole prefix is measured instead.

For LLaVA-1.5 this gives the same labels as LLaVA's ``preprocess_v1`` round
arithmetic (instruction length − 2 for BOS and the trailing ``▁``, and its
``−1`` for non-legacy tokenizers after ``</s>``), without depending on either
rule: it measures instead of predicting.
"""

from __future__ import annotations

from typing import Any, Sequence

from alignkit.datasets.constants import IGNORE_INDEX, IMAGE_TOKEN, IMAGE_TOKEN_INDEX, BadSample
from alignkit.datasets.templates.base import ConversationTemplate, Segment
from alignkit.datasets.templates.presets import get_template


def tokenize_with_image(tokenizer, text: str, add_bos: bool) -> list[int]:
    """Ids of ``text`` with ``IMAGE_TOKEN_INDEX`` for each ``<image>`` (LLaVA's ``tokenizer_image_token``)."""
    ids: list[int] = []
    if add_bos:
        if tokenizer.bos_token_id is None:
            raise ValueError(f"the template asks for BOS but tokenizer {type(tokenizer).__name__} has no bos_token")
        ids.append(tokenizer.bos_token_id)
    for i, chunk in enumerate(text.split(IMAGE_TOKEN)):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        if chunk:
            ids.extend(tokenizer.encode(chunk, add_special_tokens=False))
    return ids


def _merge(segments: Sequence[Segment]) -> list[Segment]:
    """Join neighbours with the same ``train`` flag: only flag changes are boundaries."""
    out: list[Segment] = []
    for s in segments:
        if out and out[-1].train == s.train:
            out[-1] = Segment(out[-1].text + s.text, s.train)
        else:
            out.append(s)
    return out


def _atomic_ids(tokenizer, strings: Sequence[str]) -> dict[str, int]:
    """The strings that are one special token of ``tokenizer`` (so tokenization restarts after them)."""
    out = {}
    for text in strings:
        ids = tokenizer.encode(text, add_special_tokens=False) if text else []
        if len(ids) == 1 and tokenizer.convert_tokens_to_ids(text) == ids[0]:
            out[text] = ids[0]
    return out


def _measure(tokenizer, input_ids, text, b, add_bos, anchor) -> int | None:
    """Number of tokens of ``text[:b]`` in ``input_ids``, or ``None`` if they do not line up."""
    if anchor is not None:
        a_pos, a_count, a_text, a_id = anchor
        local = tokenize_with_image(tokenizer, a_text + text[a_pos:b], add_bos=False)
        end = a_count + len(local) - 1
        if local[:1] == [a_id] and input_ids[a_count:end] == local[1:]:
            return end
    head = tokenize_with_image(tokenizer, text[:b], add_bos)
    return len(head) if input_ids[: len(head)] == head else None


def encode_segments(
    segments: Sequence[Segment], tokenizer, add_bos: bool, turn_ends: Sequence[str] = ()
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of rendered segments (module docstring).

    Args:
        segments: the template's output.
        tokenizer: as for ``encode_conversation``.
        add_bos: start with BOS.
        turn_ends: end-of-turn strings after which measuring may restart; those
            that are not one special token of ``tokenizer`` are ignored.
    """
    segments = _merge(segments)
    text = "".join(s.text for s in segments)
    input_ids = tokenize_with_image(tokenizer, text, add_bos)
    labels = [IGNORE_INDEX] * len(input_ids)
    ends = _atomic_ids(tokenizer, turn_ends)
    b, start, anchor = 0, 0, None
    for i, seg in enumerate(segments):
        b += len(seg.text)
        end = len(input_ids) if i == len(segments) - 1 else _measure(tokenizer, input_ids, text, b, add_bos, anchor)
        if end is None or end < start:
            raise BadSample(
                "mismatch",
                f"the tokens of the text up to boundary {i} ({text[max(0, b - 30) : b]!r}) are not the sequence's "
                "first tokens: a token straddles the boundary",
            )
        if seg.train:
            labels[start:end] = input_ids[start:end]
        start = end
        for end_text, end_id in ends.items():
            if text.endswith(end_text, 0, b) and input_ids[end - 1 : end] == [end_id]:
                anchor = (b, end, end_text, end_id)
    # The image placeholder is never a target, whatever a template marks.
    labels = [IGNORE_INDEX if tok == IMAGE_TOKEN_INDEX else lab for tok, lab in zip(input_ids, labels, strict=True)]
    if all(lab == IGNORE_INDEX for lab in labels):
        raise BadSample("no_supervised_tokens", "every position is masked")
    return input_ids, labels


def encode_conversation(
    conversations: Sequence[Any], template: str | dict | ConversationTemplate, tokenizer, has_image: bool
) -> tuple[list[int], list[int]]:
    """Token ids and labels of a LLaVA conversation under ``template``.

    Args:
        conversations: ``[{"from": "human"|"gpt", "value": str}, ...]``.
        template: a name in ``TEMPLATES``, a dict, or a ``ConversationTemplate``.
        tokenizer: anything with ``encode(text, add_special_tokens=False)`` and
            ``bos_token_id`` (Hugging Face tokenizers, ``SentencePieceTokenizer``).
        has_image: whether the row has an image (its conversation must hold one ``<image>``).

    Returns:
        ``(input_ids, labels)``, lists of equal length; ``input_ids`` holds
        ``IMAGE_TOKEN_INDEX`` where the image goes, ``labels`` holds
        ``IGNORE_INDEX`` wherever nothing is supervised.

    Raises:
        BadSample: with the reason the sample cannot be trained on.
    """
    template = get_template(template)
    segments = template.render(conversations, has_image)
    return encode_segments(segments, tokenizer, template.add_bos, template.turn_ends)
