"""``llama3``, ``phi3`` and ``gemma``: the official chat formats, and only the
assistant's content and end-of-turn token supervised.

The expected sequences are written out here from each model's published chat
template, piece by piece (``pieces`` below: text, supervised?), tokenized with a
tiny byte-level BPE tokenizer that knows the format's special tokens.
"""

from __future__ import annotations

import pytest

from alignkit.datasets import IGNORE_INDEX, IMAGE_TOKEN_INDEX, encode_conversation, get_template


def human(v):
    return {"from": "human", "value": v}


def gpt(v):
    return {"from": "gpt", "value": v}


CONV = [
    human("What is this photo of?\n<image>"),
    gpt(" A cat on the grass. "),  # surrounding spaces: trimmed by llama3/gemma, kept by phi3
    human("What colour is the cat?"),
    gpt("Orange."),
]


def expected_pieces(kind: str, system: str | None = None) -> list[tuple[str, bool]]:
    """The format of each model's chat template; ``<image>`` already moved to the front (LLaVA)."""
    q1, a1, q2, a2 = "<image>\nWhat is this photo of?", " A cat on the grass. ", "What colour is the cat?", "Orange."
    if kind == "llama3":
        # bos + '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>'
        def turn(role, content, train):
            return [
                (f"<|start_header_id|>{role}<|end_header_id|>\n\n", False),
                (content.strip(), train),
                ("<|eot_id|>", train),
            ]

        sys = turn("system", system, False) if system else []
        return (
            [("<|begin_of_text|>", False)]
            + sys
            + turn("user", q1, False)
            + turn("assistant", a1, True)
            + turn("user", q2, False)
            + turn("assistant", a2, True)
        )
    if kind == "phi3":
        # '<|user|>\n' + content + '<|end|>\n', '<|assistant|>\n' + content + '<|end|>\n' (no BOS, no trim)
        def turn(tag, content, train):
            return [(f"<|{tag}|>\n", False), (content, train), ("<|end|>", train), ("\n", False)]

        sys = turn("system", system, False) if system else []
        return (
            sys
            + turn("user", q1, False)
            + turn("assistant", a1, True)
            + turn("user", q2, False)
            + turn("assistant", a2, True)
        )
    if kind == "gemma":
        # bos + '<start_of_turn>' + ('model' for the assistant) + '\n' + content | trim + '<end_of_turn>\n'
        def turn(role, content, train):
            return [
                (f"<start_of_turn>{role}\n", False),
                (content.strip(), train),
                ("<end_of_turn>", train),
                ("\n", False),
            ]

        return (
            [("<bos>", False)]
            + turn("user", q1, False)
            + turn("model", a1, True)
            + turn("user", q2, False)
            + turn("model", a2, True)
        )
    raise AssertionError(kind)


def tokenize_pieces(tok, pieces):
    ids, labels = [], []
    for text, train in pieces:
        for k, chunk in enumerate(text.split("<image>")):
            if k:
                ids.append(IMAGE_TOKEN_INDEX)
                labels.append(IGNORE_INDEX)
            t = tok.encode(chunk, add_special_tokens=False) if chunk else []
            ids += t
            labels += t if train else [IGNORE_INDEX] * len(t)
    return ids, labels


@pytest.mark.parametrize("kind", ["llama3", "phi3", "gemma"])
def test_chat_template_ids_and_mask(chat_tokenizer, kind):
    tok = chat_tokenizer(kind)
    ids, labels = encode_conversation(CONV, kind, tok, has_image=True)
    exp_ids, exp_labels = tokenize_pieces(tok, expected_pieces(kind))
    assert ids == exp_ids
    assert labels == exp_labels


@pytest.mark.parametrize(
    "kind, end_of_turn, keeps_spaces",
    [("llama3", "<|eot_id|>", False), ("phi3", "<|end|>", True), ("gemma", "<end_of_turn>", False)],
)
def test_only_assistant_content_and_end_of_turn_supervised(chat_tokenizer, kind, end_of_turn, keeps_spaces):
    tok = chat_tokenizer(kind)
    ids, labels = encode_conversation(CONV, kind, tok, has_image=True)
    runs, cur = [], []
    for label in labels + [IGNORE_INDEX]:
        if label == IGNORE_INDEX:
            if cur:
                runs.append(tok.decode(cur))
            cur = []
        else:
            cur.append(label)
    a1 = " A cat on the grass. " if keeps_spaces else "A cat on the grass."
    assert runs == [a1 + end_of_turn, "Orange." + end_of_turn]
    assert IMAGE_TOKEN_INDEX in ids and labels[ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX


@pytest.mark.parametrize("kind", ["llama3", "phi3"])
def test_system_prompt(chat_tokenizer, kind):
    tok = chat_tokenizer(kind)
    system = "You are a helpful language and vision assistant."
    ids, labels = encode_conversation(CONV, get_template(kind, system=system), tok, has_image=True)
    exp_ids, exp_labels = tokenize_pieces(tok, expected_pieces(kind, system))
    assert (ids, labels) == (exp_ids, exp_labels)


def test_gemma_has_no_system_turn():
    with pytest.raises(ValueError, match="no system turn"):
        get_template("gemma", system="Be brief.")


def test_text_only_row_has_no_image_placeholder(chat_tokenizer):
    tok = chat_tokenizer("llama3")
    conv = [human("Name a colour."), gpt("Red.")]
    ids, labels = encode_conversation(conv, "llama3", tok, has_image=False)
    assert IMAGE_TOKEN_INDEX not in ids
    assert tok.decode([lab for lab in labels if lab != IGNORE_INDEX]) == "Red.<|eot_id|>"
