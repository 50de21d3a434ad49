"""SentencePieceTokenizer and load_tokenizer: legacy vs non-legacy, against SentencePiece and transformers."""

from __future__ import annotations

import pickle
import re

import pytest
import sentencepiece as spm
from hypothesis import given
from hypothesis import strategies as st

from alignkit.datasets import SentencePieceTokenizer, load_tokenizer

SPECIALS = ("<s>", "</s>", "<unk>")


@pytest.fixture(scope="module")
def sp(sp_model):
    return spm.SentencePieceProcessor(model_file=str(sp_model))


@pytest.fixture(scope="module")
def legacy(sp_model):
    return SentencePieceTokenizer(sp_model, legacy=True)


@pytest.fixture(scope="module")
def nonlegacy(sp_model):
    return SentencePieceTokenizer(sp_model, legacy=False)


def test_special_token_ids_come_from_the_model(legacy, sp):
    assert (legacy.bos_token, legacy.eos_token, legacy.unk_token) == ("<s>", "</s>", "<unk>")
    assert (legacy.bos_token_id, legacy.eos_token_id, legacy.unk_token_id) == (sp.bos_id(), sp.eos_id(), sp.unk_id())
    assert (sp.bos_id(), sp.eos_id()) == (1, 2)  # what PAPER.md says of this model
    assert legacy.pad_token_id == legacy.unk_token_id  # LLaVA pads with unk
    assert len(legacy) == sp.get_piece_size() == 32000


def test_user_after_eos_two_tokens_legacy_one_token_nonlegacy(legacy, nonlegacy, sp):
    # With the dummy prefix "USER" is "▁USER", which this vocabulary splits in two;
    # without it, "USER" is one piece of the vocabulary.
    with_prefix = sp.encode("USER")
    assert len(with_prefix) == 2
    single = sp.piece_to_id("USER")
    assert sp.id_to_piece(single) == "USER"
    text = "Hi.</s>USER: hello"
    eos = sp.eos_id()
    ids_l = legacy.encode(text, add_special_tokens=False)
    ids_n = nonlegacy.encode(text, add_special_tokens=False)
    after_l = ids_l[ids_l.index(eos) + 1 :]
    after_n = ids_n[ids_n.index(eos) + 1 :]
    assert after_l[:2] == with_prefix
    assert after_n[:1] == [single]
    # Both give the same tokens before </s>: the start of the text always gets the prefix.
    assert ids_l[: ids_l.index(eos)] == ids_n[: ids_n.index(eos)] == sp.encode("Hi.")


def _reference_legacy(sp, text: str) -> list[int]:
    """Slow-LlamaTokenizer legacy rule written out: split at special tokens, sp.encode each stretch."""
    ids = []
    for part in re.split("(" + "|".join(map(re.escape, SPECIALS)) + ")", text):
        if part in SPECIALS:
            ids.append(sp.piece_to_id(part))
        elif part:
            ids.extend(sp.encode(part))
    return ids


# Text made of words, runs of spaces, newlines, digits and special tokens.
_pieces = st.sampled_from(
    ["cat", "USER", "ASSISTANT", ":", " ", "  ", "\n", "2", "é", "</s>", "<s>", "<unk>", "a b", "."]
)


@given(st.lists(_pieces, max_size=12))
def test_legacy_is_sentencepiece_per_stretch(legacy, sp, parts):
    text = "".join(parts)
    assert legacy.encode(text, add_special_tokens=False) == _reference_legacy(sp, text)
    assert legacy.encode(text) == [sp.bos_id()] + _reference_legacy(sp, text)


def _without_prefix(sp, part: str) -> list[int]:
    """SentencePiece without its dummy prefix: encode "\n" + part and drop "▁ <0x0A>".

    "\n" has no piece of its own in this vocabulary (byte fallback), so no piece
    spans it and what follows is segmented as if it started the text bare.
    """
    ids = sp.encode("\n" + part)
    assert [sp.id_to_piece(i) for i in ids[:2]] == ["▁", "<0x0A>"]
    return ids[2:]


@given(st.lists(_pieces, max_size=12))
def test_nonlegacy_prefix_only_at_start(nonlegacy, sp, parts):
    # Reference: the first stretch with SentencePiece's dummy prefix, every later
    # stretch (after a special token) without it.
    text = "".join(parts)
    ids = []
    for k, part in enumerate(p for p in re.split("(" + "|".join(map(re.escape, SPECIALS)) + ")", text) if p):
        if part in SPECIALS:
            ids.append(sp.piece_to_id(part))
        else:
            ids.extend(sp.encode(part) if k == 0 else _without_prefix(sp, part))
    assert nonlegacy.encode(text, add_special_tokens=False) == ids


@pytest.mark.parametrize("is_legacy", [True, False])
def test_agrees_with_transformers_llama_tokenizer(hf_llama_dir, sp_model, is_legacy):
    """transformers' (Rust) LlamaTokenizer honours ``legacy`` the same way; it only
    differs from SentencePiece on runs of spaces and leading spaces, left out here."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(hf_llama_dir), legacy=is_legacy)
    mine = SentencePieceTokenizer(sp_model, legacy=is_legacy)
    texts = [
        "A chat between a curious user and an assistant. USER: What is it? ASSISTANT: A cat.</s>"
        "USER: Why? ASSISTANT: 2 cats</s>",
        "hello</s>USER: hi there\nX",
        "<s>a b</s>c",
        "\nWhat is this?",
        "x</s></s>y",
    ]
    for text in texts:
        assert mine(text)["input_ids"] == hf(text)["input_ids"], text


def test_whitespace_runs_follow_sentencepiece_not_rust(legacy, sp, hf_llama_dir):
    # The trap PAPER.md names: the Rust tokenizer merges runs of spaces differently.
    text = "a  b"
    assert legacy.encode(text, add_special_tokens=False) == sp.encode(text)
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(hf_llama_dir), legacy=True)
    assert hf(text, add_special_tokens=False)["input_ids"] != sp.encode(text)


def test_call_batch_decode_and_pickle(legacy, sp):
    out = legacy(["a cat", "</s>USER"], add_special_tokens=False)["input_ids"]
    assert out == [sp.encode("a cat"), [sp.eos_id()] + sp.encode("USER")]
    ids = legacy.encode("a cat</s>USER: hi")
    assert legacy.decode(ids) == "<s>a cat</s>USER: hi"
    assert legacy.decode(ids, skip_special_tokens=True) == "a catUSER: hi"
    clone = pickle.loads(pickle.dumps(SentencePieceTokenizer(legacy.model_file, legacy=False)))
    assert clone.encode("</s>USER", add_special_tokens=False) == [sp.eos_id(), sp.piece_to_id("USER")]


def test_add_bos_eos_flags(sp_model, sp):
    tok = SentencePieceTokenizer(sp_model, add_bos_token=False, add_eos_token=True)
    assert tok.encode("cat") == sp.encode("cat") + [sp.eos_id()]


def test_unknown_special_token_rejected(sp_model):
    with pytest.raises(ValueError, match="<pad>"):
        SentencePieceTokenizer(sp_model, pad_token="<pad>")


def test_load_tokenizer_backends(sp_model, hf_llama_dir):
    auto = load_tokenizer(hf_llama_dir)  # tokenizer.model without tokenizer.json -> sentencepiece
    assert isinstance(auto, SentencePieceTokenizer) and auto.legacy is True  # config's legacy=false not read
    assert isinstance(load_tokenizer(sp_model, legacy=False), SentencePieceTokenizer)
    hf = load_tokenizer(hf_llama_dir, backend="hf", legacy=False)
    assert not isinstance(hf, SentencePieceTokenizer)
    assert hf.pad_token == hf.unk_token == "<unk>"
    assert hf("</s>USER", add_special_tokens=False)["input_ids"][1:] == [auto.convert_tokens_to_ids("USER")]
    with pytest.raises(ValueError, match="backend must be one of"):
        load_tokenizer(hf_llama_dir, backend="slow")


def test_load_tokenizer_reads_folder_config(tmp_path, sp_model):
    (tmp_path / "tokenizer.model").write_bytes(sp_model.read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(
        '{"add_bos_token": false, "model_max_length": 4096, "eos_token": {"content": "</s>", "__type": "AddedToken"}}'
    )
    tok = load_tokenizer(tmp_path, backend="sentencepiece")
    assert tok.add_bos_token is False and tok.model_max_length == 4096 and tok.eos_token == "</s>"
