"""The named templates: ``plain``, ``vicuna_v1`` (LLaVA-1.5), ``llava_v1``, ``llama3``, ``phi3``, ``gemma``, ``chatml``.

``vicuna_v1`` is LLaVA's ``conv_vicuna_v1``, the template LLaVA-1.5 trained
and evaluated with (``--version v1``): system prompt "A chat between a curious
*user* ...", roles ``USER``/``ASSISTANT``, separators ``" "`` and ``"</s>"``::

    <s> SYSTEM USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>

with `` A1</s>`` and `` A2</s>`` supervised (the mask stops right after the
colon of ``ASSISTANT:``). ``llava_v1`` is LLaVA's ``conv_llava_v1``, the same
format with the "curious *human*" system prompt.

``llama3``, ``phi3`` and ``gemma`` follow the chat templates of
Llama-3-8B-Instruct, Phi-3-mini-4k-instruct and Gemma-2B-it; only the
assistant's content and its end-of-turn token are supervised.

``chatml`` is the ChatML format of SmolLM2, Qwen2 and Qwen2.5 (no BOS)::

    <|im_start|>system\nSYSTEM<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n

with ``A1<|im_end|>`` supervised and the ``\n`` after it not (as xtuner's
``qwen_chat``; LLaVA-NeXT's ``preprocess_qwen`` and Qwen2-VL-Finetune also
supervise that newline, which generation never needs: it stops at ``<|im_end|>``).
Its system turn is absent unless ``system`` is given; each model's own chat
template adds its default one (``SMOLLM2_SYSTEM``, ``QWEN2_SYSTEM``,
``QWEN25_SYSTEM``), so pass it to train exactly what ``apply_chat_template`` renders.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from alignkit.datasets.templates.base import ConversationTemplate
from alignkit.datasets.templates.chat import ChatTemplate, RoleFormat
from alignkit.datasets.templates.plain import PlainTemplate

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

# The system prompts that each model's chat template adds when a conversation has none.
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QWEN2_SYSTEM = "You are a helpful assistant."
QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

_VICUNA_USER = RoleFormat(header="USER: ", end=" ")
_VICUNA_ASSISTANT = RoleFormat(header="ASSISTANT:", content_prefix=" ", end="</s>")


def _llama3_role(role: str) -> RoleFormat:
    return RoleFormat(header=f"<|start_header_id|>{role}<|end_header_id|>\n\n", end="<|eot_id|>")


TEMPLATES: dict[str, ConversationTemplate] = {
    "plain": PlainTemplate(),
    "vicuna_v1": ChatTemplate(
        name="vicuna_v1",
        user=_VICUNA_USER,
        assistant=_VICUNA_ASSISTANT,
        system=VICUNA_SYSTEM,
        system_format="{system} ",
    ),
    "llava_v1": ChatTemplate(
        name="llava_v1",
        user=_VICUNA_USER,
        assistant=_VICUNA_ASSISTANT,
        system=LLAVA_SYSTEM,
        system_format="{system} ",
    ),
    "llama3": ChatTemplate(
        name="llama3",
        user=_llama3_role("user"),
        assistant=_llama3_role("assistant"),
        system_format="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
        strip_content=True,
    ),
    "phi3": ChatTemplate(
        name="phi3",
        user=RoleFormat(header="<|user|>\n", end="<|end|>", after="\n"),
        assistant=RoleFormat(header="<|assistant|>\n", end="<|end|>", after="\n"),
        system_format="<|system|>\n{system}<|end|>\n",
        add_bos=False,  # the current Phi-3 chat template starts without <s>
    ),
    "gemma": ChatTemplate(
        name="gemma",
        user=RoleFormat(header="<start_of_turn>user\n", end="<end_of_turn>", after="\n"),
        assistant=RoleFormat(header="<start_of_turn>model\n", end="<end_of_turn>", after="\n"),
        strip_content=True,
    ),
    "chatml": ChatTemplate(
        name="chatml",
        user=RoleFormat(header="<|im_start|>user\n", end="<|im_end|>", after="\n"),
        assistant=RoleFormat(header="<|im_start|>assistant\n", end="<|im_end|>", after="\n"),
        system_format="<|im_start|>system\n{system}<|im_end|>\n",
        add_bos=False,  # <|im_start|> is SmolLM2's bos_token, but its chat template adds no BOS
    ),
}


def get_template(template: str | dict | ConversationTemplate, **overrides: Any) -> ConversationTemplate:
    """A template by name (``'vicuna_v1'``), by ``dict(name=..., **overrides)``, or as given.

    Overrides replace fields of the preset, e.g. ``get_template('llama3', system='...')``
    or ``get_template('phi3', add_bos=True)``.
    """
    if isinstance(template, dict):
        overrides = {**template, **overrides}
        template = overrides.pop("name", None)
    if isinstance(template, str):
        if template not in TEMPLATES:
            raise ValueError(f"template must be one of {sorted(TEMPLATES)}, got {template!r}")
        template = TEMPLATES[template]
    if not isinstance(template, ConversationTemplate):
        raise ValueError(f"template must be a name, a dict with 'name', or a ConversationTemplate; got {template!r}")
    if overrides:
        fields = {f.name for f in dataclasses.fields(template)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"template {template.name!r} has no field(s) {unknown}; fields are {sorted(fields)}")
        template = dataclasses.replace(template, **overrides)
    return template
