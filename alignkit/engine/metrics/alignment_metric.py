"""``AlignmentMetric``: the alignment metrics of a validation split, for mmengine's ``ValLoop``.

The model does the heavy part (``LLaVAModel`` in ``mode='align'``, which its
``val_step`` runs): it labels each image, scores the visual tokens against the
word table with :mod:`alignkit.engine.metrics.functional` and returns one small
dict per image, so no (P, E) tensor leaves the device:

    label_ranks   Long[n_i]   rank of each labelled patch's top-1 label among the V words (1 = nearest)
    label_cos     Float[n_i]  cosine between those patches' visual tokens and their label rows
    agree_hits    int         labelled patches whose nearest word is among their top-n labels
    agree_tokens  int         labelled patches
    tacs          float       the image's TACS (NaN when its caption has no tokens)

This metric pools them over the split (ranks and cosines over all labelled
patches, agreement over all labelled patches, TACS averaged over images) and
returns keys ``<prefix>/label_top{k}``, ``label_mean_rank``, ``label_cosine``,
``nearest_word_agreement`` and ``tacs``. No key holds "loss".
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from mmengine.evaluator import BaseMetric

from alignkit.registry import METRICS
from alignkit.utils.validate import check_ints

REQUIRED = ("label_ranks", "label_cos", "agree_hits", "agree_tokens", "tacs")


@METRICS.register_module()
class AlignmentMetric(BaseMetric):
    """Label retrieval (top-k, mean rank), label cosine, nearest-word agreement and TACS of a split.

    Args:
        ks: the k of the top-k label retrieval accuracies (default top-1 and top-5).
        prefix: the key prefix (``'align'`` -> ``align/label_top1``, ...).
        collect_device: where results are gathered across ranks (``'cpu'`` or ``'gpu'``).
    """

    default_prefix = "align"

    def __init__(self, ks: Sequence[int] = (1, 5), prefix: str | None = None, collect_device: str = "cpu") -> None:
        ks = check_ints("ks", ks, low=1)
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ks = ks

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep the per-image dicts of one batch (``LLaVAModel``'s ``mode='align'`` output)."""
        for i, sample in enumerate(data_samples):
            if not isinstance(sample, dict) or any(k not in sample for k in REQUIRED):
                got = sorted(sample) if isinstance(sample, dict) else type(sample).__name__
                raise ValueError(
                    f"data_samples[{i}] must be a dict with {list(REQUIRED)} (LLaVAModel mode='align'), got {got}; "
                    "does the model have an aligner or align_eval.labeler?"
                )
            self.results.append(
                dict(
                    label_ranks=torch.as_tensor(sample["label_ranks"]).detach().long().cpu(),
                    label_cos=torch.as_tensor(sample["label_cos"]).detach().double().cpu(),
                    agree_hits=int(sample["agree_hits"]),
                    agree_tokens=int(sample["agree_tokens"]),
                    tacs=float(sample["tacs"]),
                )
            )

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        nan = float("nan")
        ranks = torch.cat([r["label_ranks"] for r in results]) if results else torch.zeros(0, dtype=torch.long)
        cos = torch.cat([r["label_cos"] for r in results]) if results else torch.zeros(0, dtype=torch.float64)
        out = {f"label_top{k}": float((ranks <= k).double().mean()) if len(ranks) else nan for k in self.ks}
        out["label_mean_rank"] = float(ranks.double().mean()) if len(ranks) else nan
        out["label_cosine"] = float(cos.mean()) if len(cos) else nan
        tokens = sum(r["agree_tokens"] for r in results)
        out["nearest_word_agreement"] = sum(r["agree_hits"] for r in results) / tokens if tokens else nan
        scores = [r["tacs"] for r in results if not math.isnan(r["tacs"])]
        out["tacs"] = sum(scores) / len(scores) if scores else nan
        return out
