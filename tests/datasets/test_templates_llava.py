"""``plain`` and ``vicuna_v1`` give LLaVA-1.5's token ids and label masks.

Expected values come from two independent derivations written here:

1. LLaVA's own rules, re-implemented from its description: the prompt string of
   ``conv_vicuna_v1``, ``tokenizer_image_token`` (cut at ``<image>``, BOS once),
   and ``preprocess_v1``'s round arithmetic (instruction length − 2, the
   non-legacy −1 after the first round, the ``cur_len == total_len`` check).
   The code under test does not use that arithmetic: it measures prefixes.
2. By hand: the supervised runs are each answer's own SentencePiece tokens plus
   ``</s>`` (the dummy prefix stands for the space after ``ASSISTANT:``), and
   the image sits right after the tokens of ``SYSTEM + " USER: "``.
"""

from __future__ import annotations

import pytest
import sentencepiece as spm

from alignkit.datasets import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    BadSample,
    SentencePieceTokenizer,
    encode_conversation,
    get_template,
)
from alignkit.datasets.templates import Segment, encode_segments
from alignkit.testing import byte_level_bpe_tokenizer, chain_merges

# LLaVA's conv_vicuna_v1 system prompt ("--version v1" in LLaVA-1.5's scripts).
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def human(v):
    return {"from": "human", "value": v}


def gpt(v):
    return {"from": "gpt", "value": v}


CONVERSATIONS = {
    "single_image_end": ([human("What is in this photo?\n<image>"), gpt("A ginger cat.")], True),
    "single_image_front": ([human("<image>\nDescribe the image briefly."), gpt("A cup of coffee on a saucer.")], True),
    "multi_round": (
        [
            human("<image>\nWhat animal is this?"),
            gpt("It is a cat."),
            human("What colour is its fur?"),
            gpt("Orange, with darker stripes.\nIt looks soft."),
            human("How many ears can you see?"),
            gpt("2"),
        ],
        True,
    ),
    "text_only": (
        [human("Name three primary colours."), gpt("Red, yellow and blue."), human("And one more?"), gpt("Green.")],
        False,
    ),
}


# --- derivation 1: LLaVA's rules ------------------------------------------------
def llava_prompt(conversations, has_image: bool) -> str:
    msgs = [dict(m) for m in conversations]
    if has_image:  # preprocess_multimodal
        for m in msgs:
            if "<image>" in m["value"]:
                m["value"] = ("<image>\n" + m["value"].replace("<image>", "").strip()).strip()
    text = SYSTEM + " "  # system + sep
    for j, m in enumerate(msgs):
        role = "USER" if m["from"] == "human" else "ASSISTANT"
        text += role + ": " + m["value"] + (" " if j % 2 == 0 else "</s>")  # sep / sep2
    return text


def tokenizer_image_token(tokenizer, prompt: str) -> list[int]:
    chunks = [tokenizer(c)["input_ids"] for c in prompt.split("<image>")]
    ids = [chunks[0][0]]  # every chunk starts with BOS; keep one
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[1:])
    return ids


def llava_preprocess_v1(tokenizer, conversations, has_image: bool, nonlegacy_fix: bool):
    """(input_ids, labels, consistent) as LLaVA's preprocess_v1 computes them."""
    prompt = llava_prompt(conversations, has_image)

    def tok(t):
        return tokenizer_image_token(tokenizer, t) if has_image else tokenizer(t)["input_ids"]

    ids = tok(prompt)
    labels = list(ids)
    total_len = sum(1 for t in ids if t != tokenizer.pad_token_id)
    sep = " ASSISTANT: "
    cur = 1
    labels[:cur] = [IGNORE_INDEX] * cur
    for i, rou in enumerate(prompt.split("</s>")):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tok(rou))
        instruction_len = len(tok(parts[0])) - 2  # BOS, and the "▁" of the trailing space
        if i != 0 and nonlegacy_fix:  # "USER" after </s> loses its prefix: one token fewer
            round_len -= 1
            instruction_len -= 1
        labels[cur : cur + instruction_len] = [IGNORE_INDEX] * instruction_len
        cur += round_len
    labels[cur:] = [IGNORE_INDEX] * (len(labels) - cur)
    return ids, labels, cur == total_len


def llava_preprocess_plain(tokenizer, conversations):
    prompt = "<image>" + conversations[1]["value"] + "\n"
    ids = tokenizer_image_token(tokenizer, prompt)
    n = len(tokenizer_image_token(tokenizer, "<image>"))
    return ids, [IGNORE_INDEX] * n + ids[n:]


# --- derivation 2: by hand -------------------------------------------------------
def supervised_runs(labels):
    runs, cur = [], []
    for label in labels:
        if label == IGNORE_INDEX:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(label)
    return runs + ([cur] if cur else [])


@pytest.fixture(scope="module")
def sp(sp_model):
    return spm.SentencePieceProcessor(model_file=str(sp_model))


@pytest.fixture(scope="module", params=["sp-legacy", "sp-nonlegacy", "hf-legacy", "hf-nonlegacy"])
def tokenizer(request, sp_model, hf_llama_dir):
    backend, mode = request.param.split("-")
    if backend == "sp":
        return SentencePieceTokenizer(sp_model, legacy=mode == "legacy")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_llama_dir), legacy=mode == "legacy")
    tok.pad_token = tok.unk_token
    return tok


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_vicuna_v1_equals_llava_preprocess_v1(tokenizer, name):
    conversations, has_image = CONVERSATIONS[name]
    ids, labels = encode_conversation(conversations, "vicuna_v1", tokenizer, has_image)
    ref_ids, ref_labels, consistent = llava_preprocess_v1(
        tokenizer, conversations, has_image, nonlegacy_fix=not tokenizer.legacy
    )
    assert consistent  # LLaVA would not have masked this sample away
    assert ids == ref_ids
    assert labels == ref_labels


def test_nonlegacy_needs_llavas_minus_one(sp_model):
    """Why LLaVA subtracts 1 per later round for non-legacy tokenizers: without it the
    round arithmetic overshoots by one token per round after the first."""
    conversations, has_image = CONVERSATIONS["multi_round"]
    nonlegacy = SentencePieceTokenizer(sp_model, legacy=False)
    legacy = SentencePieceTokenizer(sp_model, legacy=True)
    assert not llava_preprocess_v1(nonlegacy, conversations, has_image, nonlegacy_fix=False)[2]
    assert not llava_preprocess_v1(legacy, conversations, has_image, nonlegacy_fix=True)[2]
    assert llava_preprocess_v1(legacy, conversations, has_image, nonlegacy_fix=False)[2]


@pytest.mark.parametrize("is_legacy", [True, False])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_vicuna_v1_by_hand(sp, sp_model, is_legacy, name):
    conversations, has_image = CONVERSATIONS[name]
    tok = SentencePieceTokenizer(sp_model, legacy=is_legacy)
    ids, labels = encode_conversation(conversations, "vicuna_v1", tok, has_image)
    answers = [m["value"] for m in conversations if m["from"] == "gpt"]
    # Each answer: its own tokens (the dummy prefix is the space after the colon), then </s>.
    assert supervised_runs(labels) == [sp.encode(a) + [sp.eos_id()] for a in answers]
    # The token before each run is the colon of "ASSISTANT:".
    starts = [i for i in range(1, len(labels)) if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX]
    assert [sp.id_to_piece(ids[i - 1]) for i in starts] == [":"] * len(answers)
    assert ids[0] == sp.bos_id()
    if has_image:
        assert ids.count(IMAGE_TOKEN_INDEX) == 1
        assert ids.index(IMAGE_TOKEN_INDEX) == 1 + len(sp.encode(SYSTEM + " USER: "))
        # After the image: "\n" tokenized as its own chunk, dummy prefix first.
        k = ids.index(IMAGE_TOKEN_INDEX)
        assert [sp.id_to_piece(t) for t in ids[k + 1 : k + 3]] == ["▁", "<0x0A>"]
    else:
        assert IMAGE_TOKEN_INDEX not in ids
    # After every </s> but the last comes "USER": two tokens legacy, one non-legacy.
    expected = sp.encode("USER:") if is_legacy else [sp.piece_to_id("USER"), sp.piece_to_id(":")]
    assert len(expected) == (3 if is_legacy else 2)
    after = [ids[i + 1 : i + 1 + len(expected)] for i, t in enumerate(ids[:-1]) if t == sp.eos_id()]
    assert after == [expected] * (len(answers) - 1)


def test_image_at_end_is_moved_to_front(sp_model):
    tok = SentencePieceTokenizer(sp_model)
    end = [human("What is in this photo?\n<image>"), gpt("A cat.")]
    front = [human("<image>\nWhat is in this photo?"), gpt("A cat.")]
    assert encode_conversation(end, "vicuna_v1", tok, True) == encode_conversation(front, "vicuna_v1", tok, True)


@pytest.mark.parametrize(
    "caption", ["A ginger cat looks to the side.", " two spaces  inside, leading space", "Ends with newline\n"]
)
def test_plain_equals_llava_preprocess_plain(tokenizer, caption):
    conversations = [human("Give a brief description of the image.\n<image>"), gpt(caption)]
    ids, labels = encode_conversation(conversations, "plain", tokenizer, True)
    ref_ids, ref_labels = llava_preprocess_plain(tokenizer, conversations)
    assert ids == ref_ids and labels == ref_labels


def test_plain_by_hand(sp, sp_model):
    tok = SentencePieceTokenizer(sp_model)
    caption = "A cup of coffee on a saucer."
    ids, labels = encode_conversation([human("<image>\nDescribe."), gpt(caption)], "plain", tok, True)
    body = sp.encode(caption + "\n")  # caption as written, then "\n"; no </s>
    assert ids == [sp.bos_id(), IMAGE_TOKEN_INDEX] + body
    assert labels == [IGNORE_INDEX, IGNORE_INDEX] + body
    assert sp.eos_id() not in ids


@pytest.mark.parametrize(
    "template, conversations, has_image, reason",
    [
        ("plain", [human("Describe."), gpt("A cat.")], True, "no_image_token"),
        ("plain", [human("<image>"), gpt("   ")], True, "empty_message"),
        ("plain", [human("<image>"), gpt("A cat."), human("More?"), gpt("No.")], True, "bad_conversation"),
        ("plain", [human("<image>\nDescribe."), gpt("A cat.")], False, "bad_conversation"),
        ("vicuna_v1", [human("<image>\nA?"), gpt("B <image>")], True, "extra_image_token"),
        ("vicuna_v1", [human("<image>\nA? <image>"), gpt("B")], True, "extra_image_token"),
        ("vicuna_v1", [human("<image>\nA?"), gpt("B")], False, "extra_image_token"),
        ("vicuna_v1", [human("A?"), human("B?")], False, "bad_conversation"),
        ("vicuna_v1", [human("A?"), gpt("B"), human("C?")], False, "bad_conversation"),
        ("vicuna_v1", [{"from": "system", "value": "x"}, gpt("B")], False, "bad_conversation"),
        ("vicuna_v1", [human("A?"), gpt("")], False, "empty_message"),
        ("vicuna_v1", "not a list", False, "bad_conversation"),
    ],
)
def test_bad_conversations_raise_with_reason(sp_model, template, conversations, has_image, reason):
    tok = SentencePieceTokenizer(sp_model)
    with pytest.raises(BadSample) as info:
        encode_conversation(conversations, template, tok, has_image)
    assert info.value.reason == reason


def test_leading_gpt_turn_is_dropped_like_llava(sp_model):
    tok = SentencePieceTokenizer(sp_model)
    conv = [gpt("Hello."), human("Name a colour."), gpt("Red.")]
    assert encode_conversation(conv, "vicuna_v1", tok, False) == encode_conversation(conv[1:], "vicuna_v1", tok, False)


def test_llava_v1_has_the_human_system_prompt(sp_model, sp):
    tok = SentencePieceTokenizer(sp_model)
    conv = [human("Hi?"), gpt("Hello.")]
    ids, _ = encode_conversation(conv, "llava_v1", tok, False)
    system = SYSTEM.replace("user", "human")
    assert ids[: 1 + len(sp.encode(system))] == [sp.bos_id()] + sp.encode(system)


def test_get_template_rejects_unknown_names_and_fields():
    with pytest.raises(ValueError, match="vicuna_v1"):
        get_template("vicuna")
    with pytest.raises(ValueError, match="no field"):
        get_template("vicuna_v1", sep2="</s>")
    assert get_template(dict(name="vicuna_v1", system="Be brief.")).system == "Be brief."


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_measuring_from_turn_ends_equals_measuring_whole_prefixes(tokenizer, name):
    """Restarting the measurement after each </s> (linear time) changes nothing."""
    conversations, has_image = CONVERSATIONS[name]
    template = get_template("vicuna_v1")
    segments = template.render(conversations, has_image)
    assert template.turn_ends and "</s>" in template.turn_ends
    assert encode_segments(segments, tokenizer, True, template.turn_ends) == encode_segments(segments, tokenizer, True)


def test_a_token_straddling_a_boundary_is_a_mismatch():
    tok = byte_level_bpe_tokenizer(chain_merges(["cats"], "Ġ"))  # " cats" is one token
    assert len(tok.encode(" cats", add_special_tokens=False)) == 1
    with pytest.raises(BadSample) as info:
        encode_segments([Segment("two cat", False), Segment("s", True)], tok, add_bos=False)
    assert info.value.reason == "mismatch"
    ids, labels = encode_segments([Segment("two", False), Segment(" cats", True)], tok, add_bos=False)
    assert labels[-1] == ids[-1] and labels[0] == IGNORE_INDEX
