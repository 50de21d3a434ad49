"""Tiny, real Hugging Face tokenizers and embeddings built locally, for tests and demos.

Nothing here downloads anything. Two tokenizer kinds cover the two ways LLMs mark a
word boundary:

- ``byte_level_bpe_tokenizer``: GPT-2 / Llama-3 / SmolLM style. Text is split
  by a regex, bytes are mapped to printable characters and a leading space
  becomes ``Ġ``; "cat" mid-sentence is ``Ġcat``, at the start of a text ``cat``.
- ``metaspace_bpe_tokenizer``: SentencePiece / Llama-2 / Vicuna / Mistral style.
  Spaces become ``▁``, a ``▁`` is prepended to the first word, and unknown
  characters fall back to ``<0xNN>`` byte tokens.

Both are BPE models whose merges the caller controls. ``chain_merges(words, marker)``
spells each word out left to right (``▁c a → ▁ca``, ``▁ca t → ▁cat``), so a test can
derive the split of any word by hand: the longest prefix ``marker + w[:j]`` of a
listed word, then one token per remaining character.
"""
from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torch import nn
from transformers import PreTrainedTokenizerFast

BYTE_LEVEL_SPACE = "Ġ"  # what a byte-level BPE makes of a leading space
METASPACE = "▁"  # SentencePiece's word-boundary marker

# Words the default tokenizers know as single (mid-sentence) tokens; anything
# else splits into a known prefix and single characters.
DEMO_WORDS = (
    "a", "the", "of", "on", "in", "and", "with", "is", "photo", "picture",
    "cat", "dog", "bird", "horse", "car", "tree", "grass", "sky", "water",
    "road", "man", "woman", "red", "green", "blue", "white", "black",
)


def chain_merges(words: Iterable[str], marker: str) -> list[tuple[str, str]]:
    """BPE merges that build ``marker + word`` one character at a time, for each word.

    Merges are listed in order of first appearance, without duplicates, so a
    word's tokenization is its longest listed prefix followed by single characters.
    """
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in words:
        piece = marker + word
        for j in range(2, len(piece) + 1):
            merge = (piece[: j - 1], piece[j - 1])
            if merge not in seen:
                seen.add(merge)
                merges.append(merge)
    return merges


def _vocab(base: Sequence[str], merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for token in list(base) + [a + b for a, b in merges]:
        vocab.setdefault(token, len(vocab))
    for a, b in merges:
        if a not in vocab or b not in vocab:
            raise ValueError(f"merge {(a, b)!r} uses a piece that is neither in the alphabet nor made by a merge")
    return vocab


def byte_level_bpe_tokenizer(
    merges: Sequence[tuple[str, str]] | None = None, *, add_bos: bool = False
) -> PreTrainedTokenizerFast:
    """A GPT-2/Llama-3-style byte-level BPE tokenizer.

    Vocabulary: ``<|begin_of_text|>`` (0), ``<|end_of_text|>`` (1), the 256
    byte-level characters (sorted), then one token per merge. Every text
    tokenizes (there are no unknown characters).

    Args:
        merges: BPE merges over byte-level characters (``Ġ`` is a space); by
            default ``chain_merges(DEMO_WORDS, 'Ġ')``.
        add_bos: if True, a post-processor prepends ``<|begin_of_text|>`` whenever
            ``add_special_tokens=True`` (the default of ``tokenizer(text)``).
    """
    if merges is None:
        merges = chain_merges(DEMO_WORDS, BYTE_LEVEL_SPACE)
    merges = [tuple(m) for m in merges]
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    vocab = _vocab(specials + sorted(pre_tokenizers.ByteLevel.alphabet()), merges)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", vocab["<|begin_of_text|>"])],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
    )


def metaspace_bpe_tokenizer(
    merges: Sequence[tuple[str, str]] | None = None, *, add_bos: bool = False
) -> PreTrainedTokenizerFast:
    """A SentencePiece/Llama-2-style BPE tokenizer (Metaspace ``▁``, byte fallback).

    Vocabulary in Llama's order: ``<unk>`` (0), ``<s>`` (1), ``</s>`` (2), the
    256 byte tokens ``<0x00>``..``<0xFF>``, ``▁``, ``a``..``z``, ``A``..``Z``,
    the digits and ASCII punctuation, then one token per merge. The pre-tokenizer
    is Llama's: ``Metaspace(prepend_scheme='first', split=False)``, so "cat" at
    the start of a text is ``▁cat`` as it is mid-sentence.

    Args:
        merges: BPE merges (``▁`` is a space); by default ``chain_merges(DEMO_WORDS, '▁')``.
        add_bos: if True, a post-processor prepends ``<s>`` whenever
            ``add_special_tokens=True``, as Llama's tokenizer does.
    """
    if merges is None:
        merges = chain_merges(DEMO_WORDS, METASPACE)
    merges = [tuple(m) for m in merges]
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    chars = [METASPACE] + list(string.ascii_letters + string.digits + string.punctuation)
    vocab = _vocab(specials + byte_tokens + chars, merges)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace(METASPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )


def random_embedding(
    num_embeddings: int, embedding_dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> nn.Embedding:
    """An ``nn.Embedding`` with N(0, 1) weights drawn from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_embeddings, embedding_dim, generator=g, dtype=torch.float64)
    return nn.Embedding.from_pretrained(weight.to(dtype), freeze=True)


def tiny_llama(tokenizer, *, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` sized for ``tokenizer`` (tests and demos only).

    ``intermediate_size`` is ``2 * hidden_size``; weights come from ``torch.manual_seed(seed)``
    inside a ``torch.random.fork_rng`` so the caller's global RNG is untouched.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()
