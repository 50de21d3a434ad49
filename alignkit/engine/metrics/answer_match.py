"""Reference metrics of generated answers: exact match and token F1 after normalisation (plain strings, no model).

``tools/test.py`` scores each generated answer against the row's reference
(the last ``gpt`` turn of its LLaVA conversation). The rule is SQuAD's
(``evaluate-v2.0.py``), written here, with Unicode punctuation and articles
dropped as whole tokens:

- normalise: lower-case; delete every punctuation character (Unicode
  category ``P*``: ``"``, ``—`` and ``¿`` as well as ASCII ``.,!?``;
  ``don't`` becomes ``dont``); split on whitespace; drop the tokens ``a``,
  ``an`` and ``the``; join with single spaces. (SQuAD drops articles with a
  ``\b`` regex, which also splits them off a symbol such as ``a+b``; symbols
  (``+``, ``$``) are not punctuation and stay part of their token here.)
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

import unicodedata
from collections import Counter

ARTICLES = frozenset({"a", "an", "the"})


def normalize_answer(text: str) -> str:
    """``text`` lower-cased, without punctuation and articles, whitespace collapsed (module docstring)."""
    text = "".join(c for c in text.lower() if not unicodedata.category(c).startswith("P"))  # "don't" -> "dont"
    return " ".join(t for t in text.split() if t not in ARTICLES)


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
