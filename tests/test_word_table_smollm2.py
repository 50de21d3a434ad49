"""The word table (Eq. 8) on a real byte-level BPE vocabulary: SmolLM2-135M-Instruct's.

The mid-sentence rule must give the ``Ġword`` form for every word of the default
word list, and the table must land in a meaningful space: related words closer
than unrelated ones, nearest rows of a noun holding its plural or a synonym.
"""
import pytest
import torch
import torch.nn.functional as F

from alignkit.labelers.word_list import default_word_list
from alignkit.word_table import build_word_table, word_token_ids

# (anchor, related, unrelated), written before measuring anything; the test asks for >= 90 % in order.
TRIPLETS = [
    ("dog", "puppy", "car"), ("cat", "kitten", "table"), ("car", "truck", "banana"), ("king", "queen", "river"),
    ("man", "woman", "cloud"), ("boy", "girl", "hammer"), ("apple", "banana", "engine"), ("red", "blue", "chair"),
    ("house", "home", "sugar"), ("river", "lake", "pencil"), ("doctor", "nurse", "window"),
    ("horse", "pony", "laptop"), ("ship", "boat", "pizza"), ("shirt", "jacket", "planet"),
    ("bread", "cake", "rocket"), ("coffee", "tea", "tiger"), ("mountain", "hill", "spoon"),
    ("ocean", "sea", "guitar"), ("chair", "sofa", "moon"), ("car", "bus", "flower"), ("bird", "eagle", "computer"),
    ("sun", "moon", "bottle"), ("rain", "snow", "teacher"), ("happy", "glad", "stone"), ("big", "large", "music"),
    ("small", "tiny", "kitchen"), ("fast", "quick", "bread"), ("phone", "telephone", "horse"),
    ("knife", "fork", "cloud"), ("shoe", "boot", "island"), ("city", "town", "cheese"), ("road", "street", "apple"),
    ("wolf", "fox", "camera"), ("piano", "guitar", "carrot"), ("table", "desk", "ocean"), ("cup", "mug", "tiger"),
    ("airplane", "jet", "potato"), ("camera", "photo", "soup"), ("clock", "watch", "sheep"),
    ("star", "galaxy", "sandwich"), ("astronaut", "rocket", "butter"), ("coin", "money", "tree"),
    ("cat", "dog", "spoon"), ("tree", "forest", "phone"), ("flower", "rose", "truck"), ("fish", "shark", "ladder"),
    ("girl", "daughter", "engine"), ("father", "mother", "window"), ("soldier", "army", "banana"),
    ("book", "novel", "wheel"),
]
# Common nouns whose 10 nearest rows must hold their plural (regular or not) or one of the synonyms given.
NEIGHBOURS = {
    "dog": {"dogs", "puppy", "doggy"}, "cat": {"cats", "kitten"}, "car": {"cars", "automobile"},
    "house": {"houses", "home"}, "king": {"kings", "queen"}, "tree": {"trees"}, "boat": {"boats", "ship"},
    "horse": {"horses", "pony"}, "apple": {"apples"}, "bird": {"birds"}, "book": {"books"},
    "city": {"cities", "town"}, "girl": {"girls"}, "shoe": {"shoes"}, "river": {"rivers"},
    "flower": {"flowers", "blossom"}, "chair": {"chairs"}, "camera": {"cameras"}, "rocket": {"rockets"},
    "coin": {"coins"}, "child": {"children", "kid"}, "man": {"men"}, "woman": {"women"}, "mouse": {"mice"},
}


@pytest.fixture(scope="module")
def default_words():
    return list(default_word_list())


@pytest.fixture(scope="module")
def smollm2_table(smollm2_tokenizer, smollm2_llm, default_words):
    return build_word_table(smollm2_tokenizer, smollm2_llm.get_input_embeddings(), default_words)


def test_tokenizer_is_byte_level_bpe(smollm2_tokenizer):
    # The fact the mid-sentence rule exists for: " dog" and "dog" are different tokens.
    tok = smollm2_tokenizer
    spaced, bare = tok.encode(" dog", add_special_tokens=False), tok.encode("dog", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(spaced) == ["Ġdog"]
    assert len(bare) == 1 and bare != spaced
    assert tok.encode("dog") == bare  # no BOS added by default


def test_every_default_word_gets_its_mid_sentence_tokens(smollm2_tokenizer, default_words):
    tok = smollm2_tokenizer
    ids = word_token_ids(tok, default_words)  # raises if any word cannot be split from its prefix
    # Independent reference: GPT-2-style pre-tokenization keeps " word" (space + letters) one pre-token,
    # so the word's mid-sentence tokens are exactly those of " word" alone.
    reference = [list(r) for r in tok([" " + w for w in default_words], add_special_tokens=False)["input_ids"]]
    assert ids == reference
    special = set(tok.all_special_ids)
    for word, word_ids in zip(default_words, ids, strict=True):
        assert word_ids, word
        assert not special.intersection(word_ids), (word, word_ids)  # never <|endoftext|> or another special
        assert tok.convert_ids_to_tokens(word_ids[0]).startswith("Ġ"), (word, word_ids)
        assert tok.decode(word_ids) == " " + word
    assert max(map(len, ids)) > 1  # the list does hold multi-token words


@pytest.mark.parametrize(
    "word, pieces",
    [("aeroplane", ["Ġaer", "opl", "ane"]), ("crème", ["Ġcr", "Ã¨", "me"]), ("dog", ["Ġdog"])],
)
def test_multi_token_words(smollm2_tokenizer, smollm2_llm, word, pieces):
    tok = smollm2_tokenizer
    # "è" is two UTF-8 bytes, written by byte-level BPE as the two characters "Ã¨".
    [ids] = word_token_ids(tok, [word])
    assert tok.convert_ids_to_tokens(ids) == pieces
    assert tok.decode(ids) == " " + word
    embedding = smollm2_llm.get_input_embeddings()
    table = build_word_table(tok, embedding, ["cat", word])
    torch.testing.assert_close(table.table[1], embedding.weight[ids].mean(0))
    assert table.token_counts.tolist() == [1, len(pieces)]


def test_table_covers_the_default_list(smollm2_table, default_words):
    assert smollm2_table.table.shape == (len(default_words), 576)
    assert smollm2_table.num_empty == 0
    assert torch.isfinite(smollm2_table.table).all()
    assert (smollm2_table.table.norm(dim=-1) > 0).all()


def test_related_words_are_closer_than_unrelated(smollm2_table):
    index = {w: i for i, w in enumerate(smollm2_table.words)}
    missing = sorted({w for t in TRIPLETS for w in t} - set(index))
    assert not missing, f"triplet words not in the default word list: {missing}"
    rows = F.normalize(smollm2_table.table.double(), dim=-1)
    ordered = [
        bool(rows[index[a]] @ rows[index[b]] > rows[index[a]] @ rows[index[c]]) for a, b, c in TRIPLETS
    ]
    wrong = [t for t, ok in zip(TRIPLETS, ordered, strict=True) if not ok]
    assert sum(ordered) >= 0.9 * len(TRIPLETS), f"{len(wrong)} of {len(TRIPLETS)} triplets out of order: {wrong}"


def test_nearest_rows_hold_plural_or_synonym(smollm2_table):
    words = smollm2_table.words
    index = {w: i for i, w in enumerate(words)}
    rows = F.normalize(smollm2_table.table, dim=-1)
    failures = {}
    for noun, expected in NEIGHBOURS.items():
        sims = rows @ rows[index[noun]]
        sims[index[noun]] = -2  # not itself
        nearest = {words[i] for i in sims.topk(10).indices.tolist()}
        if not nearest & expected:
            failures[noun] = sorted(nearest)
    assert not failures, f"nearest rows without a plural or synonym: {failures}"
