"""Fixtures for the data tests: a real Llama-type SentencePiece model, tiny chat
tokenizers, and real photographs with captions written for this project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from alignkit.testing import byte_level_bpe_tokenizer, chain_merges

# Captions written for this project (not taken from any dataset).
PHOTOS = {
    "astronaut": "An astronaut in a white suit poses in front of an American flag.",
    "chelsea": "A ginger tabby cat looks to the side.",
    "coffee": "A cup of coffee on a saucer with a spoon.",
}


def mistral_sentencepiece_model() -> Path:
    """mistral_common's Llama-type SentencePiece model (32k pieces, <s>=1, </s>=2); a dev dependency."""
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; install the dev extra (mistral_common)")
    return path


@pytest.fixture(scope="session")
def sp_model() -> Path:
    return mistral_sentencepiece_model()


@pytest.fixture(scope="session")
def hf_llama_dir(tmp_path_factory, sp_model) -> Path:
    """A folder holding only tokenizer.model + tokenizer_config.json, like lmsys/vicuna-7b-v1.5."""
    d = tmp_path_factory.mktemp("llama_tok")
    (d / "tokenizer.model").write_bytes(sp_model.read_bytes())
    cfg = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


CHAT_WORDS = ("a", "the", "cat", "is", "what", "this", "photo", "of", "on", "orange", "user", "assistant", "model")

CHAT_SPECIALS = {
    "llama3": dict(bos="<|begin_of_text|>", extra=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
    "phi3": dict(bos="<s>", extra=["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]),
    "gemma": dict(bos="<bos>", extra=["<start_of_turn>", "<end_of_turn>"]),
}


def _chat_tokenizer(kind: str):
    spec = CHAT_SPECIALS[kind]
    tok = byte_level_bpe_tokenizer(chain_merges(CHAT_WORDS, "Ġ") + chain_merges(CHAT_WORDS, ""))
    tok.add_special_tokens({"bos_token": spec["bos"], "additional_special_tokens": spec["extra"]})
    return tok


@pytest.fixture(scope="session")
def chat_tokenizer():
    """``chat_tokenizer(kind)``: a tiny byte-level BPE tokenizer with the special tokens
    of a chat format (``'llama3'``, ``'phi3'``, ``'gemma'``), built locally."""
    return _chat_tokenizer


@pytest.fixture(scope="session")
def captions() -> dict[str, str]:
    return dict(PHOTOS)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """astronaut.png (512×512), chelsea.jpg (451×300), coffee.jpg (600×400) from scikit-image."""
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    Image.fromarray(data.chelsea()).save(d / "chelsea.jpg", quality=90)
    Image.fromarray(data.coffee()).save(d / "coffee.jpg", quality=90)
    return d
