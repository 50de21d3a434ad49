"""The word table (Eq. 8 of SEA): one LLM input-embedding vector per word of the word list.

    t_i = 1/M · Σ_k Ψ(w_i^k)

where w_i^1..w_i^M are the tokens of word w_i and Ψ is the LLM's input embedding
layer (``llm.get_input_embeddings()``). The table (V, E) is built once per
LLM/tokenizer, before any sharding of the embedding matrix, and the aligner
gathers its rows with the sampled pairs' word ids.

Which tokens make up a word is decided in one place, ``word_token_ids``: the
word **as it appears mid-sentence, with no BOS/EOS**. Captions put words after a
space, so that is the form whose embeddings the LLM sees next to the visual
tokens: ``▁cat`` for SentencePiece tokenizers (Llama-2, Vicuna, Mistral, Gemma),
``Ġcat`` for byte-level BPE (GPT-2, Llama-3, SmolLM), never the
start-of-text form (``cat``, which for byte-level BPE is a different token)
nor the BOS a tokenizer adds by default.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WordTable", "build_word_table", "word_token_ids"]

logger = logging.getLogger(__name__)

# Texts a word is appended to (after a space) to get its mid-sentence tokens.
# The first is used; a word for which the prefix's own tokens change when the
# word follows (a merge across the space) is retried with the next.
DEFAULT_PREFIXES = ("the", "a", ".")

ON_EMPTY_CHOICES = ("raise", "mask")


def _input_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    # One batched call: fast tokenizers encode the whole list in Rust.
    encoded = tokenizer(texts, add_special_tokens=False)
    return [list(ids) for ids in encoded["input_ids"]]


def word_token_ids(
    tokenizer, words: Sequence[str], *, prefixes: Sequence[str] = DEFAULT_PREFIXES
) -> list[list[int]]:
    """The token ids of each word as it appears mid-sentence, with no BOS/EOS.

    Every word is tokenized as ``prefix + " " + word`` and ``prefix`` alone, with
    ``add_special_tokens=False``; the word's ids are what follows the prefix's ids.
    This one rule gives ``▁word`` for SentencePiece tokenizers and ``Ġword`` for
    byte-level BPE, whatever the tokenizer's BOS/EOS and prefix-space settings.
    If the prefix's ids are not an exact prefix of the combined ids (a merge across
    the space), the word is retried with the next of ``prefixes``.

    Args:
        tokenizer: a Hugging Face tokenizer (fast or slow): called as
            ``tokenizer(list_of_texts, add_special_tokens=False)["input_ids"]``.
        words: the word list (V words). A word must not start or end with
            whitespace; the empty string has no tokens (``[]``).
        prefixes: texts to put before the word, tried in order.

    Returns:
        V lists of token ids, ``[]`` for the empty word.

    Raises:
        ValueError: a word with leading/trailing whitespace or that is not a
            ``str``; no prefix gives a clean split for some word; ``prefixes`` empty.
    """
    words = list(words)
    prefixes = list(prefixes)
    if not prefixes:
        raise ValueError("prefixes must name at least one text to put before each word, got an empty sequence")
    for i, word in enumerate(words):
        if not isinstance(word, str):
            raise ValueError(f"words[{i}] must be a str, got {type(word).__name__} {word!r}")
        if word != word.strip():
            raise ValueError(
                f"words[{i}] = {word!r} has leading or trailing whitespace; strip the word list first "
                "(the mid-sentence rule adds the single space itself)"
            )

    result: list[list[int] | None] = [[] if word == "" else None for word in words]
    pending = [i for i, word in enumerate(words) if word != ""]
    failures: dict[int, list[int]] = {}
    for prefix in prefixes:
        if not pending:
            break
        prefix_ids = _input_ids(tokenizer, [prefix])[0]
        n = len(prefix_ids)
        combined = _input_ids(tokenizer, [f"{prefix} {words[i]}" for i in pending])
        still = []
        for i, ids in zip(pending, combined, strict=True):
            if ids[:n] == prefix_ids:
                result[i] = ids[n:]  # may be [] if the tokenizer drops every character of the word
            else:
                failures[i] = ids
                still.append(i)
        pending = still
    if pending:
        shown = ", ".join(f"{words[i]!r} -> {failures[i]}" for i in pending[:5])
        raise ValueError(
            f"{len(pending)} word(s) could not be split from any prefix in {prefixes!r}: the prefix's own "
            f"tokens change when the word follows it ({shown}{', ...' if len(pending) > 5 else ''}); "
            "pass prefixes=... that this tokenizer keeps intact"
        )
    return result  # type: ignore[return-value]


@dataclass
class WordTable:
    """The LLM-space embedding of every word of the word list (Eq. 8).

    Attributes:
        table: Float[V, E]; row i is the mean of the input embeddings of word i's
            tokens, zero for a word without tokens (``valid[i]`` False).
        valid: Bool[V]; False for words that tokenize to nothing (only possible
            with ``on_empty='mask'``). A sampler or aligner must not pair a patch
            with an invalid word.
        words: the V words, in table order.
        token_counts: Long[V]; M, the number of tokens of each word.
    """

    table: Tensor
    valid: Tensor
    words: list[str]
    token_counts: Tensor

    def __post_init__(self) -> None:
        v = len(self.words)
        if self.table.dim() != 2 or self.table.shape[0] != v:
            raise ValueError(f"WordTable.table must be (V={v}, E), got shape {tuple(self.table.shape)}")
        if self.valid.shape != (v,) or self.valid.dtype != torch.bool:
            raise ValueError(f"WordTable.valid must be Bool[{v}], got {self.valid.dtype} {tuple(self.valid.shape)}")
        if self.token_counts.shape != (v,):
            raise ValueError(f"WordTable.token_counts must be Long[{v}], got shape {tuple(self.token_counts.shape)}")

    @property
    def num_empty(self) -> int:
        """How many words tokenize to nothing (rows masked out)."""
        return int((~self.valid).sum())

    @property
    def embed_dim(self) -> int:
        """E, the LLM's embedding width."""
        return self.table.shape[1]

    def __len__(self) -> int:
        return len(self.words)

    def to(self, *args, **kwargs) -> WordTable:
        """A copy with ``table`` moved/cast by ``Tensor.to(*args, **kwargs)`` and the masks moved alongside."""
        table = self.table.to(*args, **kwargs)
        return WordTable(table, self.valid.to(table.device), list(self.words), self.token_counts.to(table.device))


def _embedding_rows(embedding: nn.Embedding | Tensor):
    """(number of rows, Ψ as a function of Long[U] ids -> (U, E), device, dtype) of ``embedding``."""
    if isinstance(embedding, Tensor):
        weight = embedding
        lookup = None
    elif isinstance(embedding, nn.Embedding):
        weight = embedding.weight
        # A subclass that overrides forward (e.g. Gemma's scaled word embedding)
        # defines Ψ by its forward; a plain nn.Embedding is a row look-up.
        lookup = None if type(embedding).forward is nn.Embedding.forward else embedding
    else:
        raise ValueError(
            "embedding must be an nn.Embedding (or subclass) or a (vocab, E) weight tensor, "
            f"got {type(embedding).__name__}; for another embedding module pass its weight"
        )
    if weight.dim() != 2 or weight.shape[0] == 0 or weight.shape[1] == 0:
        raise ValueError(
            f"embedding weight must be (vocab, E) with vocab, E > 0, got shape {tuple(weight.shape)}; "
            "build the word table before the embedding is sharded (e.g. inside "
            "deepspeed.zero.GatheredParameters under ZeRO-3)"
        )
    if not weight.dtype.is_floating_point:
        raise ValueError(f"embedding weight must be a float tensor, got {weight.dtype}")

    def psi(ids: Tensor) -> Tensor:
        return weight[ids] if lookup is None else lookup(ids)

    return weight.shape[0], psi, weight.device, weight.dtype


def build_word_table(
    tokenizer,
    embedding: nn.Embedding | Tensor,
    words: Sequence[str],
    *,
    on_empty: str = "raise",
    dtype: torch.dtype | None = None,
    prefixes: Sequence[str] = DEFAULT_PREFIXES,
) -> WordTable:
    """Build the (V, E) word table of Eq. 8: the mean input embedding of each word's tokens.

    Args:
        tokenizer: the LLM's Hugging Face tokenizer; words are split by
            ``word_token_ids`` (mid-sentence form, no BOS/EOS).
        embedding: Ψ, the LLM's input embedding layer (``llm.get_input_embeddings()``)
            (an ``nn.Embedding``) or its (vocab, E) weight. A subclass that overrides
            ``forward`` (e.g. Gemma's scaled word embedding) is called on the token
            ids, so Ψ is exactly what the LLM feeds its first layer; a plain
            ``nn.Embedding`` is a row look-up. Must not be sharded.
        words: the word list (V >= 1 words).
        on_empty: what to do with a word that tokenizes to nothing: ``'raise'``
            (ValueError naming the word) or ``'mask'`` (a zero row, ``valid``
            False, and a warning on the ``alignkit.word_table`` logger with the
            count and the first few words).
        dtype: dtype of the returned table; ``None`` keeps the embedding's dtype.
            The means are always accumulated in at least float32.
        prefixes: see ``word_token_ids``.

    Returns:
        A detached ``WordTable`` on the embedding's device.
    """
    if on_empty not in ON_EMPTY_CHOICES:
        raise ValueError(f"on_empty must be one of {ON_EMPTY_CHOICES}, got {on_empty!r}")
    words = list(words)
    if not words:
        raise ValueError("words must hold at least one word, got an empty word list")
    num_rows, psi, device, weight_dtype = _embedding_rows(embedding)

    ids_per_word = word_token_ids(tokenizer, words, prefixes=prefixes)
    counts = torch.tensor([len(ids) for ids in ids_per_word], dtype=torch.long)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty and on_empty == "raise":
        shown = ", ".join(f"{words[i]!r} (index {i})" for i in empty[:5])
        raise ValueError(
            f"{len(empty)} word(s) tokenize to nothing: {shown}{', ...' if len(empty) > 5 else ''}; "
            "remove them from the word list or pass on_empty='mask'"
        )

    flat = torch.tensor([t for ids in ids_per_word for t in ids], dtype=torch.long)
    bad = ((flat < 0) | (flat >= num_rows)).nonzero().flatten()
    if bad.numel():
        # Map the first bad position back to its word for the message.
        word_of = torch.repeat_interleave(torch.arange(len(words)), counts)
        i, tid = int(word_of[bad[0]]), int(flat[bad[0]])
        raise ValueError(
            f"word {words[i]!r} (index {i}) has token id {tid}, outside the embedding's {num_rows} rows; "
            "the tokenizer and the embedding do not belong to the same LLM (or the embedding was not resized "
            "after adding tokens)"
        )

    accumulate = torch.float64 if weight_dtype == torch.float64 else torch.float32
    offsets = torch.cumsum(counts, 0) - counts  # start of each word's ids in `flat`
    with torch.no_grad():
        # Ψ of each distinct token once, upcast: (U, E) instead of a fp32 copy of the whole (vocab, E) matrix.
        unique, inverse = torch.unique(flat, return_inverse=True)
        rows = psi(unique.to(device)).to(accumulate)  # (U, E)
        # Mean over each word's bag of tokens; an empty bag gives a zero row, not NaN.
        table = F.embedding_bag(inverse.to(device), rows, offsets.to(device), mode="mean")  # (V, E)
    table = table.to(dtype if dtype is not None else weight_dtype).detach()
    valid = (counts > 0).to(device)
    if empty:
        logger.warning(
            "word table: %d of %d word(s) tokenize to nothing and are masked out (zero rows, valid=False): %s%s",
            len(empty), len(words), ", ".join(repr(words[i]) for i in empty[:5]), ", ..." if len(empty) > 5 else "",
        )
    return WordTable(table=table, valid=valid, words=words, token_counts=counts.to(device))
