"""``chatml`` against a real tokenizer's own chat template: SmolLM2-135M-Instruct's.

The token ids must equal what the tokenizer's ``apply_chat_template`` renders,
with ``<image>`` handled as LLaVA's ``tokenizer_image_token`` does (the rendered
prompt cut at ``<image>``, each piece tokenized alone). The labels must supervise
exactly each assistant message's content and its ``<|im_end|>``.
"""
import pytest

from alignkit.datasets import IGNORE_INDEX, IMAGE_TOKEN_INDEX, BadSample
from alignkit.datasets.templates import SMOLLM2_SYSTEM, encode_conversation, get_template

# A plain ChatML chat template without a default system turn, written for this test (the
# format SmolLM2's template renders, minus the system prompt it inserts when there is none).
PLAIN_CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
)

H, G = "human", "gpt"
CONVERSATIONS = {
    "single": (True, [(H, "<image>\nWhat is in the picture?"), (G, "A cat sitting on a wall.")]),
    "image_at_end": (True, [(H, "Describe this photo briefly.\n<image>"), (G, "A rocket on the launch pad.")]),
    "image_alone": (True, [(H, "<image>"), (G, "a white coffee cup on a saucer")]),
    "multi_turn": (
        True,
        [(H, "<image>\nWhat colour is the cup?"), (G, "It is white."), (H, "And the table?"), (G, "Red, with a spoon.")],
    ),
    "text_only_multi": (False, [(H, "Hi!"), (G, "Hello! How can I help?"), (H, "2+2?"), (G, "4")]),
    "unicode": (
        True,
        [(H, "<image>\nQu'est-ce que c'est ? 这是什么？ 🚀"), (G, "Une fusée — 火箭 🚀, prête au décollage.")],
    ),
    "newlines_and_spaces": (False, [(H, "Line one\nline two  (two spaces)"), (G, "First,\n\n  indented answer  ")]),
}


def llava_conversation(turns):
    return [{"from": who, "value": text} for who, text in turns]


def reference_messages(turns, has_image):
    """LLaVA's preprocess_multimodal (``<image>`` to the front of its turn), then chat-template roles."""
    out = []
    for who, text in turns:
        if has_image and "<image>" in text:
            text = ("<image>\n" + text.replace("<image>", "").strip()).strip()
        out.append({"role": "user" if who == H else "assistant", "content": text})
    return out


def tokenizer_image_token(tokenizer, prompt):
    """LLaVA's rule, written here: cut at <image>, tokenize each piece alone, -200 between the pieces."""
    ids = []
    for i, piece in enumerate(prompt.split("<image>")):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        if piece:
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids


def reference_ids(tokenizer, messages, chat_template=None):
    text = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=chat_template)
    ids = tokenizer_image_token(tokenizer, text)
    if "<image>" not in text:  # no image: the tokenizer's own tokenized output, with nothing of ours in between
        direct = tokenizer.apply_chat_template(messages, tokenize=True, chat_template=chat_template)
        direct = direct["input_ids"] if hasattr(direct, "keys") else direct
        assert list(direct) == ids
    return ids


def supervised_runs(labels):
    runs, current = [], []
    for lab in labels:
        if lab == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(lab)
    return runs + ([current] if current else [])


SYSTEM_CASES = {
    # template override -> system message passed to apply_chat_template (None: let the template add its default)
    "default_system": (dict(system=SMOLLM2_SYSTEM), None, None),
    "own_system": (dict(system="You describe images in one sentence. Ünïcode ok."), "own", None),
    "no_system": (dict(), None, PLAIN_CHATML),
}


@pytest.mark.parametrize("system_case", sorted(SYSTEM_CASES))
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_chatml_equals_smollm2_chat_template(smollm2_tokenizer, name, system_case):
    tok = smollm2_tokenizer
    has_image, turns = CONVERSATIONS[name]
    overrides, system_message, chat_template = SYSTEM_CASES[system_case]
    messages = reference_messages(turns, has_image)
    if system_message == "own":
        messages = [{"role": "system", "content": overrides["system"]}, *messages]
    expected = reference_ids(tok, messages, chat_template)

    ids, labels = encode_conversation(llava_conversation(turns), get_template("chatml", **overrides), tok, has_image)
    assert ids == expected
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # no BOS of its own before the first turn

    # Supervised: exactly each assistant content + <|im_end|>, in order; the newline after it is not.
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    assert supervised_runs(labels) == [tok(r, add_special_tokens=False)["input_ids"] + [im_end] for r in replies]
    assert all(lab in (IGNORE_INDEX, tok_id) for lab, tok_id in zip(labels, ids, strict=True))
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    assert ids[-2:] == [im_end, *newline] and labels[-1] == IGNORE_INDEX


def test_chatml_default_has_no_system_turn(smollm2_tokenizer):
    ids, _ = encode_conversation(llava_conversation(CONVERSATIONS["single"][1]), "chatml", smollm2_tokenizer, True)
    assert smollm2_tokenizer.decode(ids[:3]) == "<|im_start|>user\n"


def test_reply_starting_with_whitespace_is_a_mismatch_not_a_wrong_mask(smollm2_tokenizer):
    # Byte-level BPE writes "assistant\n  x" as "assistant", "\n ", " x": a token straddles the start of the
    # supervised part, so the sample is refused (counted as 'mismatch' by the dataset) instead of mis-masked.
    turns = [(H, "Hi"), (G, "  leading spaces")]
    with pytest.raises(BadSample, match="mismatch"):
        encode_conversation(llava_conversation(turns), "chatml", smollm2_tokenizer, False)
