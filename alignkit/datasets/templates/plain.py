"""``plain``: LLaVA's stage-1 (feature alignment) template.

The human turn is dropped; the sequence is the image followed by the caption
exactly as written and LLaVA's separator ``"\\n"``:

    <s> <image> caption \\n        supervised: caption and "\\n" (no </s>)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from alignkit.datasets.constants import IMAGE_TOKEN, BadSample
from alignkit.datasets.templates.base import ConversationTemplate, Segment, normalise_conversation


@dataclass(frozen=True)
class PlainTemplate(ConversationTemplate):
    """Image, then caption + ``sep``; only the caption and ``sep`` are supervised."""

    name: str = "plain"
    sep: str = "\n"
    add_bos: bool = True

    def render(self, conversations: Sequence[Any], has_image: bool) -> list[Segment]:
        if not has_image:
            raise BadSample("bad_conversation", "the plain template needs an image row (image + caption)")
        if not isinstance(conversations, (list, tuple)) or len(conversations) != 2:
            n = len(conversations) if isinstance(conversations, (list, tuple)) else type(conversations).__name__
            raise BadSample("bad_conversation", f"the plain template takes one human turn and one caption, got {n}")
        # move_image=False: the human text is replaced by the bare image anyway.
        caption = normalise_conversation(conversations, has_image, move_image=False)[1].text
        return [Segment(IMAGE_TOKEN, False), Segment(caption + self.sep, True)]
