"""The word table (Eq. 8): per-word mean of the LLM's input embeddings of the word's mid-sentence tokens.

Expected token splits are derived here by hand from the merges each test gives
its tokenizer (BPE applies merges by rank within one pre-token), and expected rows
are computed with plain indexing and a float64 mean, not with embedding_bag.
"""
import logging
import os
import re
import shutil

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from alignkit.testing import (
    DEMO_WORDS,
    byte_level_bpe_tokenizer,
    metaspace_bpe_tokenizer,
    random_embedding,
    tiny_llama,
)
from alignkit.word_table import WordTable, build_word_table, word_token_ids

# Per tokenizer kind: the space marker, the builder.
KINDS = {"byte_level": ("Ġ", byte_level_bpe_tokenizer), "metaspace": ("▁", metaspace_bpe_tokenizer)}


def merges_for(sp):
    # sp+c, sp+c+a, sp+c+a+t build "<sp>cat"; sp+d and o+g leave "dog" in two pieces.
    return [(sp, "c"), (sp + "c", "a"), (sp + "ca", "t"), (sp, "d"), ("o", "g")]


def expected_pieces(sp):
    """Mid-sentence pieces of each test word under ``merges_for(sp)``, derived by hand."""
    return {
        "cat": [sp + "cat"],  # the full chain applies
        "dog": [sp + "d", "og"],  # sp+d and o+g both apply, nothing joins them
        "cart": [sp + "ca", "r", "t"],  # the chain stops at "ca": no (sp+"ca", "r") merge
        "bird": [sp, "b", "i", "r", "d"],  # no merge starts with sp+"b"
        "go": [sp, "g", "o"],  # o+g needs an "o" before the "g"
    }


def make(kind, add_bos=False):
    sp, builder = KINDS[kind]
    return sp, builder(merges_for(sp), add_bos=add_bos)


def reference_row(weight, tokenizer, pieces):
    ids = tokenizer.convert_tokens_to_ids(pieces)
    assert tokenizer.unk_token_id not in ids or tokenizer.unk_token_id is None
    return weight[ids].double().mean(0)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("add_bos", [False, True])
def test_word_token_ids_mid_sentence_no_specials(kind, add_bos):
    sp, tokenizer = make(kind, add_bos=add_bos)
    if add_bos:
        # The tokenizer really adds BOS by default...
        assert tokenizer("cat")["input_ids"][0] == tokenizer.bos_token_id
    expected = expected_pieces(sp)
    ids = word_token_ids(tokenizer, list(expected))
    # ...but the word's ids hold no BOS/EOS, only its mid-sentence pieces.
    assert ids == [tokenizer.convert_tokens_to_ids(p) for p in expected.values()]
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert not specials & {t for word_ids in ids for t in word_ids}


def test_byte_level_uses_the_spaced_form_not_the_start_of_text_form():
    _, tokenizer = make("byte_level")
    # At the start of a text "cat" has no leading space: three bare characters.
    assert tokenizer.convert_ids_to_tokens(tokenizer("cat", add_special_tokens=False)["input_ids"]) == ["c", "a", "t"]
    assert word_token_ids(tokenizer, ["cat"]) == [[tokenizer.convert_tokens_to_ids("Ġcat")]]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("add_bos", [False, True])
def test_row_is_mean_of_token_rows(kind, add_bos):
    sp, tokenizer = make(kind, add_bos=add_bos)
    expected = expected_pieces(sp)
    embedding = random_embedding(len(tokenizer), 5, seed=3, dtype=torch.float64)
    wt = build_word_table(tokenizer, embedding, list(expected))
    assert isinstance(wt, WordTable)
    assert wt.table.shape == (len(expected), 5) and wt.table.dtype == torch.float64
    assert wt.words == list(expected)
    assert wt.token_counts.tolist() == [len(p) for p in expected.values()]
    assert wt.valid.all() and wt.num_empty == 0 and len(wt) == 5 and wt.embed_dim == 5
    for row, pieces in zip(wt.table, expected.values(), strict=True):
        torch.testing.assert_close(row, reference_row(embedding.weight, tokenizer, pieces))
    assert not wt.table.requires_grad


def test_multi_word_entry_and_hyphen():
    tokenizer = byte_level_bpe_tokenizer([("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t")])
    # Each space inside the entry starts a new pre-token with its own Ġ; "-" splits pre-tokens too.
    expected = {"cat cat": ["Ġcat", "Ġcat"], "x-cat": ["Ġ", "x", "-", "c", "a", "t"]}
    assert word_token_ids(tokenizer, list(expected)) == [tokenizer.convert_tokens_to_ids(p) for p in expected.values()]


def test_tensor_and_module_give_the_same_table():
    _, tokenizer = make("metaspace")
    embedding = random_embedding(len(tokenizer), 4, seed=1)
    words = list(expected_pieces("▁"))
    a = build_word_table(tokenizer, embedding, words)
    b = build_word_table(tokenizer, embedding.weight, words)
    assert torch.equal(a.table, b.table) and torch.equal(a.valid, b.valid)


def test_trainable_embedding_gives_a_detached_table():
    _, tokenizer = make("byte_level")
    embedding = nn.Embedding(len(tokenizer), 4)
    wt = build_word_table(tokenizer, embedding, ["cat", "dog"])
    assert not wt.table.requires_grad and wt.table.grad_fn is None


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bf16_embedding(kind):
    sp, tokenizer = make(kind)
    embedding = random_embedding(len(tokenizer), 8, seed=2, dtype=torch.bfloat16)
    expected = expected_pieces(sp)
    wt = build_word_table(tokenizer, embedding, list(expected))
    assert wt.table.dtype == torch.bfloat16
    wt32 = build_word_table(tokenizer, embedding, list(expected), dtype=torch.float32)
    assert wt32.table.dtype == torch.float32
    for row, row32, pieces in zip(wt.table, wt32.table, expected.values(), strict=True):
        ref = reference_row(embedding.weight, tokenizer, pieces)  # float64 mean of the bf16 rows
        # float32 accumulation: exact up to float32 rounding; the bf16 table is that, rounded once.
        torch.testing.assert_close(row32.double(), ref, rtol=1e-6, atol=1e-6)
        assert torch.equal(row, ref.to(torch.bfloat16))


def test_scaled_embedding_module_is_called():
    """Ψ is the module's forward: Gemma's scaled word embedding multiplies rows by sqrt(hidden)."""
    from transformers.models.gemma.modeling_gemma import GemmaTextScaledWordEmbedding

    sp, tokenizer = make("metaspace")
    embedding = GemmaTextScaledWordEmbedding(len(tokenizer), 4, padding_idx=0, embed_scale=2.0).double()
    expected = expected_pieces(sp)
    wt = build_word_table(tokenizer, embedding, list(expected))
    for row, pieces in zip(wt.table, expected.values(), strict=True):
        torch.testing.assert_close(row, 2.0 * reference_row(embedding.weight, tokenizer, pieces))


def test_tiny_llama_input_embeddings():
    tokenizer = metaspace_bpe_tokenizer(add_bos=True)
    llm = tiny_llama(tokenizer, hidden_size=16)
    wt = build_word_table(tokenizer, llm.get_input_embeddings(), DEMO_WORDS)
    assert wt.table.shape == (len(DEMO_WORDS), 16)
    # Every demo word is one "▁word" token in the default tokenizer: the row is that token's row.
    ids = tokenizer.convert_tokens_to_ids(["▁" + w for w in DEMO_WORDS])
    assert torch.equal(wt.table, llm.get_input_embeddings().weight[ids].detach())


# --- words without tokens ---------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_empty_word_raises_by_default(kind):
    _, tokenizer = make(kind)
    with pytest.raises(ValueError, match=r"1 word\(s\) tokenize to nothing: '' \(index 1\).*on_empty='mask'"):
        build_word_table(tokenizer, random_embedding(len(tokenizer), 4), ["cat", "", "dog"])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_empty_word_masked(kind, caplog):
    sp, tokenizer = make(kind)
    embedding = random_embedding(len(tokenizer), 4, seed=5, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="alignkit.word_table"):
        wt = build_word_table(tokenizer, embedding, ["cat", "", "dog", ""], on_empty="mask")
    assert wt.valid.tolist() == [True, False, True, False]
    assert wt.num_empty == 2 and wt.token_counts.tolist() == [1, 0, 2, 0]
    assert torch.equal(wt.table[1], torch.zeros(4, dtype=torch.float64)) and torch.equal(wt.table[3], wt.table[1])
    assert torch.isfinite(wt.table).all()
    torch.testing.assert_close(wt.table[2], reference_row(embedding.weight, tokenizer, [sp + "d", "og"]))
    assert "2 of 4 word(s) tokenize to nothing" in caplog.text and "''" in caplog.text


def test_all_words_empty_masked():
    _, tokenizer = make("byte_level")
    wt = build_word_table(tokenizer, random_embedding(len(tokenizer), 3), ["", ""], on_empty="mask")
    assert torch.equal(wt.table, torch.zeros(2, 3)) and not wt.valid.any()


def test_word_dropped_entirely_by_the_tokenizer_is_empty():
    """A BPE without unk/byte fallback drops unknown characters: such a word has no tokens at all."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["t", "h", "e", "c", "a"])}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw)
    # "the xyz": WhitespaceSplit gives "the", "xyz"; x, y, z are not in the vocabulary and vanish.
    assert word_token_ids(tokenizer, ["cat", "xyz"]) == [[vocab["c"], vocab["a"], vocab["t"]], []]
    with pytest.raises(ValueError, match="'xyz' \\(index 1\\)"):
        build_word_table(tokenizer, torch.zeros(5, 2), ["cat", "xyz"])


# --- fallback prefix --------------------------------------------------------------


def test_prefix_that_merges_across_the_space_falls_back():
    # ("e", "▁") lets the first prefix "the" merge into the word's space: "▁the▁cat" -> ▁ t h e▁ c a t.
    tokenizer = metaspace_bpe_tokenizer([("e", "▁")])
    assert tokenizer.convert_ids_to_tokens(tokenizer("the cat", add_special_tokens=False)["input_ids"])[3] == "e▁"
    # The next prefix, "a", leaves the space to the word.
    assert word_token_ids(tokenizer, ["cat"]) == [tokenizer.convert_tokens_to_ids(["▁", "c", "a", "t"])]
    with pytest.raises(ValueError, match=r"1 word\(s\) could not be split from any prefix in \['the'\].*'cat'"):
        word_token_ids(tokenizer, ["cat"], prefixes=("the",))


# --- bad input --------------------------------------------------------------------


def test_token_id_outside_embedding():
    _, tokenizer = make("byte_level")
    cat_id = tokenizer.convert_tokens_to_ids("Ġcat")
    message = f"word 'cat' (index 1) has token id {cat_id}, outside the embedding's {cat_id} rows"
    with pytest.raises(ValueError, match=re.escape(message)):
        build_word_table(tokenizer, torch.zeros(cat_id, 2), ["bird", "cat"])


def test_empty_word_list():
    _, tokenizer = make("byte_level")
    with pytest.raises(ValueError, match="at least one word"):
        build_word_table(tokenizer, torch.zeros(len(tokenizer), 2), [])


@pytest.mark.parametrize("on_empty", ["skip", "Mask", None])
def test_bad_on_empty(on_empty):
    _, tokenizer = make("byte_level")
    with pytest.raises(ValueError, match=rf"on_empty must be one of \('raise', 'mask'\), got {on_empty!r}"):
        build_word_table(tokenizer, torch.zeros(len(tokenizer), 2), ["cat"], on_empty=on_empty)


@pytest.mark.parametrize(
    "embedding, message",
    [
        (torch.zeros(0), r"\(vocab, E\).*got shape \(0,\).*before the embedding is sharded"),
        (torch.zeros(10, 0), r"got shape \(10, 0\)"),
        (torch.zeros(300, 2, dtype=torch.long), "must be a float tensor"),
        (nn.Linear(2, 3), "got Linear"),
        ([[0.0]], "got list"),
        (nn.ReLU(), "got ReLU"),
    ],
)
def test_bad_embedding(embedding, message):
    _, tokenizer = make("byte_level")
    with pytest.raises(ValueError, match=message):
        build_word_table(tokenizer, embedding, ["cat"])


@pytest.mark.parametrize("word", [" cat", "cat ", "\tcat", "cat\n"])
def test_word_with_surrounding_whitespace(word):
    _, tokenizer = make("metaspace")
    with pytest.raises(ValueError, match=re.escape(f"words[1] = {word!r} has leading or trailing whitespace")):
        word_token_ids(tokenizer, ["dog", word])


def test_non_string_word():
    _, tokenizer = make("metaspace")
    with pytest.raises(ValueError, match=r"words\[0\] must be a str, got int 3"):
        word_token_ids(tokenizer, [3])


def test_word_table_to():
    _, tokenizer = make("byte_level")
    wt = build_word_table(tokenizer, random_embedding(len(tokenizer), 3), ["cat", "dog"]).to(torch.float64)
    assert wt.table.dtype == torch.float64 and wt.valid.dtype == torch.bool and wt.words == ["cat", "dog"]


# --- property: the embedding_bag means equal a per-word loop -----------------------


@given(
    kind=st.sampled_from(sorted(KINDS)),
    words=st.lists(st.text(alphabet="abcdgort-", min_size=0, max_size=6), min_size=1, max_size=8),
    e=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_table_equals_per_word_reference(kind, words, e, seed):
    _, tokenizer = make(kind)
    embedding = random_embedding(len(tokenizer), e, seed=seed, dtype=torch.float64)
    wt = build_word_table(tokenizer, embedding, words, on_empty="mask")
    ids = word_token_ids(tokenizer, words)
    assert torch.isfinite(wt.table).all()
    for i, word_ids in enumerate(ids):
        # Both tokenizers cover every character (byte level / byte fallback): only "" is empty.
        assert bool(wt.valid[i]) == (words[i] != "")
        expected = embedding.weight[word_ids].mean(0) if word_ids else torch.zeros(e, dtype=torch.float64)
        torch.testing.assert_close(wt.table[i], expected)


# --- a real Llama-type SentencePiece model (ships with mistral_common) ------------------

REAL_WORDS = ["a", "cat", "aardvark", "able-bodied", "aide-de-camp", "zucchini", "photograph", "x-ray", "knee-high"]


def _mistral_sp_model():
    mistral_common = pytest.importorskip(
        "mistral_common",
        reason="mistral_common is not installed (pip install mistral_common): it ships the SentencePiece model",
    )
    pytest.importorskip("sentencepiece", reason="sentencepiece is not installed (pip install sentencepiece)")
    path = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
    if not os.path.isfile(path):
        pytest.skip(f"this mistral_common version does not ship {path}")
    return path


@pytest.fixture(scope="module")
def mistral_sp_model():
    return _mistral_sp_model()


def _fast_llama(model_path, tmp_path):
    from transformers import LlamaTokenizer

    shutil.copy(model_path, tmp_path / "tokenizer.model")  # transformers converts files named *.model
    return LlamaTokenizer.from_pretrained(str(tmp_path))


def _slow_sentencepiece(model_path, tmp_path):
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    return SentencePieceBackend(vocab_file=model_path, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("load", [_fast_llama, _slow_sentencepiece], ids=["LlamaTokenizer", "SentencePieceBackend"])
def test_real_llama_sentencepiece_tokenizer(mistral_sp_model, load, tmp_path):
    import sentencepiece

    tokenizer = load(mistral_sp_model, tmp_path)
    sp = sentencepiece.SentencePieceProcessor(model_file=mistral_sp_model)
    # SentencePiece itself encodes a lone word with its dummy "▁" prefix, which is exactly
    # the word's mid-sentence form; it never adds BOS/EOS unless asked.
    expected = sp.encode(REAL_WORDS)
    assert [sp.id_to_piece(ids[0])[0] for ids in expected] == ["▁"] * len(REAL_WORDS)
    assert any(len(ids) > 1 for ids in expected)
    assert word_token_ids(tokenizer, REAL_WORDS) == expected
    embedding = random_embedding(sp.get_piece_size(), 4, seed=7, dtype=torch.float64)
    wt = build_word_table(tokenizer, embedding, REAL_WORDS)
    for row, ids in zip(wt.table, expected, strict=True):
        torch.testing.assert_close(row, embedding.weight[ids].mean(0))
