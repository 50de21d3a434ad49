"""``ChatTemplate``: role headers and end-of-turn markers around each message.

One class covers Vicuna-v1 (LLaVA-1.5's ``vicuna_v1``), Llama-3, Phi-3 and
Gemma: each role has a format

    header | content_prefix + content + end | after

and in an assistant turn the middle part (``content_prefix``, the content and
the end-of-turn marker) is supervised, the header and ``after`` are not; user
turns and the system prompt are never supervised. The presets live in
``presets.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from alignkit.datasets.templates.base import ASSISTANT, ConversationTemplate, Segment, normalise_conversation


@dataclass(frozen=True)
class RoleFormat:
    """How one role's message is written: ``header + content_prefix + content + end + after``."""

    header: str
    end: str
    content_prefix: str = ""
    after: str = ""


@dataclass(frozen=True)
class ChatTemplate(ConversationTemplate):
    """A multi-turn chat format (see the module docstring).

    Args:
        name: key in ``TEMPLATES``.
        user, assistant: the two roles' formats.
        system: the system prompt, or ``None`` for none.
        system_format: how the system prompt is written (``{system}`` is
            replaced); ``None`` when the format has no system turn.
        strip_content: strip each message (the ``| trim`` of Llama-3's and Gemma's
            official chat templates).
        add_bos: start with the tokenizer's BOS.
    """

    name: str
    user: RoleFormat
    assistant: RoleFormat
    system: str | None = None
    system_format: str | None = None
    strip_content: bool = False
    add_bos: bool = True

    def __post_init__(self) -> None:
        if self.system is not None and self.system_format is None:
            raise ValueError(f"template {self.name!r} has no system turn; got system={self.system!r}")

    @property
    def turn_ends(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e for e in (self.assistant.end, self.user.end) if e))

    def render(self, conversations: Sequence[Any], has_image: bool) -> list[Segment]:
        messages = normalise_conversation(conversations, has_image)
        segments = []
        if self.system is not None:
            segments.append(Segment(self.system_format.replace("{system}", self.system), False))
        for m in messages:
            fmt = self.assistant if m.role == ASSISTANT else self.user
            content = m.text.strip() if self.strip_content else m.text
            body = fmt.content_prefix + content + fmt.end
            train = m.role == ASSISTANT
            segments += [Segment(fmt.header, False), Segment(body, train), Segment(fmt.after, False)]
        return [s for s in segments if s.text]
