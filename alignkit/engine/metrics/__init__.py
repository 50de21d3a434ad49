"""Evaluation: the alignment metrics (pure functions in ``functional``), ``AlignmentEvaluator`` (what
``LLaVAModel(mode='align')`` measures per image) and ``AlignmentMetric`` (METRICS, averages it)."""
from alignkit.engine.metrics.alignment_evaluator import AlignmentEvaluator
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
    "AlignmentEvaluator",
    "AlignmentMetric",
    "label_cosine",
    "label_ranks",
    "label_retrieval",
    "nearest_word_agreement",
    "nearest_word_hits",
    "nearest_words",
    "tacs",
]
