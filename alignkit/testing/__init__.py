"""Builders of tiny, local, deterministic models and tokenizers for tests and demos.

Nothing here touches the network; everything is built from code in a few milliseconds.
"""
from alignkit.testing.tokenizers import (
    BYTE_LEVEL_SPACE,
    DEMO_WORDS,
    METASPACE,
    byte_level_bpe_tokenizer,
    chain_merges,
    metaspace_bpe_tokenizer,
    random_embedding,
    tiny_llama,
)

__all__ = [
    "BYTE_LEVEL_SPACE",
    "DEMO_WORDS",
    "METASPACE",
    "byte_level_bpe_tokenizer",
    "chain_merges",
    "metaspace_bpe_tokenizer",
    "random_embedding",
    "tiny_llama",
]
