"""Evaluation metrics: the alignment metrics (pure functions in ``functional``) and ``AlignmentMetric`` (METRICS)."""
from alignkit.engine.metrics.alignment_metric import AlignmentMetric
from alignkit.engine.metrics.functional import (
    label_cosine,
    label_ranks,
    label_retrieval,
    nearest_word_agreement,
    nearest_word_hits,
    nearest_words,
    tacs,
)

__all__ = [
    "AlignmentMetric",
    "label_cosine",
    "label_ranks",
    "label_retrieval",
    "nearest_word_agreement",
    "nearest_word_hits",
    "nearest_words",
    "tacs",
]
