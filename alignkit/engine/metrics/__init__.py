"""Evaluation: the alignment metrics (pure functions in ``functional``), ``AlignmentEvaluator`` (what
``LLaVAModel(mode='align')`` measures per image) and ``AlignmentMetric`` (METRICS, averages it); and the reference
metrics of generated answers (``answer_match``: exact match and token F1, used by ``tools/test.py``)."""
from alignkit.engine.metrics.alignment_evaluator import AlignmentEvaluator
from alignkit.engine.metrics.alignment_metric import AlignmentMetric
from alignkit.engine.metrics.answer_match import exact_match, normalize_answer, token_f1
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
    "exact_match",
    "label_cosine",
    "label_ranks",
    "label_retrieval",
    "nearest_word_agreement",
    "nearest_word_hits",
    "nearest_words",
    "normalize_answer",
    "tacs",
    "token_f1",
]
