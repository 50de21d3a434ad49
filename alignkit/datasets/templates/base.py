"""What a conversation template is, and the checks every template shares.

A template turns a LLaVA conversation (``[{"from": "human"|"gpt", "value": str}, ...]``)
into a list of ``Segment(text, train)``: the prompt text cut where supervision
starts or stops. ``encode_conversation`` (``encode.py``) tokenizes it and derives
the label mask from the segment boundaries.

``normalise_conversation`` applies LLaVA's rules before any template sees the
messages: a leading non-human message is dropped, roles must alternate
human/gpt and end with gpt, and the one ``<image>`` of an image row is moved to
the front of its human turn as ``"<image>\\n" + rest.strip()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from alignkit.datasets.constants import IMAGE_TOKEN, BadSample

USER, ASSISTANT = "user", "assistant"
_ROLES = {"human": USER, "gpt": ASSISTANT}


@dataclass(frozen=True)
class Segment:
    """A stretch of prompt text; ``train`` says whether its tokens are supervised."""

    text: str
    train: bool


@dataclass(frozen=True)
class Message:
    role: str  # USER or ASSISTANT
    text: str


class ConversationTemplate:
    """Base class: ``render(conversations, has_image) -> list[Segment]``.

    Attributes:
        name: the key of the template in ``TEMPLATES``.
        add_bos: whether the token sequence starts with the tokenizer's BOS.
        turn_ends: end-of-turn strings (special tokens such as ``</s>``); label
            measuring restarts after them (``encode.py``). Empty: measure from the start.
    """

    name: str
    add_bos: bool
    turn_ends: tuple[str, ...] = ()

    def render(self, conversations: Sequence[Any], has_image: bool) -> list[Segment]:
        raise NotImplementedError


def _parse(conversations: Any) -> list[Message]:
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise BadSample(
            "bad_conversation", f"conversations must be a non-empty list, got {type(conversations).__name__}"
        )
    out = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise BadSample("bad_conversation", f"turn {i} is not a dict with a string 'value'")
        try:
            turn["value"].encode("utf-8")
        except UnicodeEncodeError as e:  # tokenizers raise TypeError / RuntimeError on these
            raise BadSample("bad_text", f"turn {i} holds {e.object[e.start:e.end]!r} at character {e.start}, "
                                        "which is not valid Unicode text (a lone surrogate)") from None
        source = turn.get("from")
        role = _ROLES.get(source) if isinstance(source, str) else None  # a list would be unhashable
        if role is None:
            raise BadSample(
                "bad_conversation", f"turn {i} has role {turn.get('from')!r}; expected one of {sorted(_ROLES)}"
            )
        out.append(Message(role, turn["value"]))
    return out


def normalise_conversation(conversations: Any, has_image: bool, move_image: bool = True) -> list[Message]:
    """Parse and check a LLaVA conversation; ``BadSample`` names what is wrong.

    Args:
        conversations: the ``conversations`` field of a LLaVA row.
        has_image: whether the row has an image.
        move_image: move ``<image>`` to the front of its turn (LLaVA's
            ``preprocess_multimodal``); templates that drop the human turn skip it.
    """
    messages = _parse(conversations)
    if messages[0].role != USER:  # LLaVA skips a leading non-human turn
        messages = messages[1:]
    if not messages:
        raise BadSample("bad_conversation", "no human turn")
    for i, m in enumerate(messages):
        expected = USER if i % 2 == 0 else ASSISTANT
        if m.role != expected:
            raise BadSample(
                "bad_conversation", f"turn {i} is from {m.role}, expected {expected} (roles must alternate)"
            )
    if messages[-1].role != ASSISTANT:
        raise BadSample("bad_conversation", "the conversation ends with a human turn (nothing to supervise)")

    counts = [m.text.count(IMAGE_TOKEN) for m in messages]
    total = sum(counts)
    if has_image and total == 0:
        raise BadSample("no_image_token", "the row has an image but its conversation has no <image>")
    if not has_image and total:
        raise BadSample("extra_image_token", f"a text-only row has {total} <image> in its conversation")
    if total > 1:
        raise BadSample("extra_image_token", f"{total} <image> in one conversation; one image per row is supported")
    if total and messages[counts.index(1)].role != USER:
        raise BadSample("extra_image_token", "<image> is in a reply, not in a human turn")

    for i, m in enumerate(messages):
        if not m.text.replace(IMAGE_TOKEN, "").strip() and not (m.role == USER and IMAGE_TOKEN in m.text):
            raise BadSample("empty_message", f"turn {i} ({m.role}) is empty")

    if move_image and total:
        k = counts.index(1)
        rest = messages[k].text.replace(IMAGE_TOKEN, "").strip()
        messages[k] = Message(USER, (IMAGE_TOKEN + "\n" + rest).strip())
    return messages
