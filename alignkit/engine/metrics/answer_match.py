"""Reference metrics of generated answers: exact match and token F1 after normalisation (plain strings, no model).

``tools/test.py`` scores each generated answer against the row's reference
(the last ``gpt`` turn of its LLaVA conversation) with SQuAD v2's rule
(``evaluate-v2.0.py``), so the numbers are the ones the field's script gives:

- normalise: lower-case; delete every ASCII punctuation character
  (``string.punctuation``: ``don't`` becomes ``dont``); delete the words
  ``a``, ``an`` and ``the`` (whole words: a regex with word boundaries, so
  ``a+b`` loses its ``a`` too, as in SQuAD); collapse whitespace.
- exact match: the two normalised strings are equal (1.0, else 0.0);
- token F1: the normalised strings split on whitespace; precision and recall
  of the multiset of shared tokens; F1 = 2PR / (P + R); when either side has
  no token, 1.0 if both have none, else 0.0.

Word overlap, not meaning: a paraphrase scores low, and a long free-form
caption against one reference caption scores low even when it is right. Use
them to compare checkpoints on the same split, and a benchmark suite
(docs/evaluation.md) for claims.
"""
from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """``text`` lower-cased, without ASCII punctuation and articles, whitespace collapsed (module docstring)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the normalised tokens' multisets (module docstring)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)
