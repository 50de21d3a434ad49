"""Conversation templates: LLaVA conversation -> prompt segments -> token ids and labels."""

from alignkit.datasets.templates.base import ConversationTemplate, Message, Segment, normalise_conversation
from alignkit.datasets.templates.chat import ChatTemplate, RoleFormat
from alignkit.datasets.templates.encode import encode_conversation, encode_segments, tokenize_with_image
from alignkit.datasets.templates.plain import PlainTemplate
from alignkit.datasets.templates.presets import (
    LLAVA_SYSTEM,
    QWEN2_SYSTEM,
    QWEN25_SYSTEM,
    SMOLLM2_SYSTEM,
    TEMPLATES,
    VICUNA_SYSTEM,
    get_template,
)

__all__ = [
    "LLAVA_SYSTEM",
    "QWEN25_SYSTEM",
    "QWEN2_SYSTEM",
    "SMOLLM2_SYSTEM",
    "TEMPLATES",
    "VICUNA_SYSTEM",
    "ChatTemplate",
    "ConversationTemplate",
    "Message",
    "PlainTemplate",
    "RoleFormat",
    "Segment",
    "encode_conversation",
    "encode_segments",
    "get_template",
    "normalise_conversation",
    "tokenize_with_image",
]
