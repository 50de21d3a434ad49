"""``SEAAligner``: SEA's align loss for one batch, from adapter outputs and patch labels.

Composition only (no new math): labeler head → samplers → word table →
align loss × λ. Usable inside any MLLM, with no Runner and no config:

    aligner = SEAAligner(labeler=labeler, samplers=[...], loss=InfoNCELoss())
    aligner.build_word_table(tokenizer, llm.get_input_embeddings())   # once
    out = aligner(visual, dense=dense)          # or labels=PatchLabels from a cache
    total = loss_lm + out['loss_align']         # already weighted by λ

The labeler is only asked to ``label(dense)``: the dense embeddings come from
the MLLM's own vision forward (``OpenCLIPVisionEncoder``), so the aligner never
runs a second copy of the tower. With labels from an offline cache no labeler
is needed at all (pass ``words`` for the word table instead).

Every value other than ``loss_align`` is for logging only and its key holds no
"loss" (mmengine sums every key that does).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from alignkit.models.zero3 import gathered
from alignkit.registry import ALIGN_LOSSES, LABELERS, MODELS
from alignkit.samplers import Compose
from alignkit.structures import EMPTY_WORD, PairSet, PatchLabels
from alignkit.utils.validate import check_number
from alignkit.word_table import build_word_table


@MODELS.register_module()
class SEAAligner(nn.Module):
    """Weighted align loss (SEA Eq. 9 × λ) of a batch, plus what to log about it.

    Args:
        labeler: a labeler (``label(dense) -> PatchLabels``, ``words``) or its
            config dict (built through ``LABELERS``; ``LLaVAModel`` fills in the
            vision encoder's model so the tower is loaded once), or None when
            labels always come in as ``PatchLabels`` (offline cache, or labels
            you compute yourself).
        samplers: a list of sampler *instances* (``WindowSampler(window=2)``,
            any ``BaseSampler``) or their config dicts, mixed freely, applied
            in order (the SEA preset: similarity-weighted, 2×2 window, dedup).
            ``[]`` keeps every pair. They run as one ``Compose``
            (``self.sampler``), which checks the pairs once and reports the
            pairs each stage kept (``align_pairs_after_<stage>``).
        loss: an align loss *instance* (``InfoNCELoss()``, any ``nn.Module``
            ``(visual (N, E), text (N, E)) -> scalar``) or its config dict
            (``ALIGN_LOSSES``); None: ``InfoNCELoss()``. It owns the learnable
            temperature, which trains with the adapter (``aligner.parameters()``).
        loss_weight: λ of Eq. 11. The paper gives no value; 1.0 is the preset.
        words: the word list the labels' ids index. **Required when
            ``labeler`` is None** (the word table is built from it); with a
            labeler, its ``words`` are used.

    Example (plain PyTorch, labels from a cache, no labeler)::

        aligner = SEAAligner(samplers=[SimilarityWeightedSampler(), WindowSampler(window=2), DedupSampler()],
                             loss=InfoNCELoss(init_logit_scale=0.0), words=cache_words)
        aligner.build_word_table(tokenizer, llm.get_input_embeddings())
        out = aligner(visual, labels=patch_labels)    # visual (B, P, E), PatchLabels for the same B images

    The word table (V, E) is set with :meth:`build_word_table` (or
    :meth:`set_word_table`) before the first forward; it is a non-persistent
    buffer (follows ``.to()``, never saved in checkpoints).
    """

    def __init__(
        self,
        labeler=None,
        samplers: Sequence = (),
        loss=None,
        loss_weight: float = 1.0,
        words: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(labeler, dict):
            labeler = LABELERS.build(labeler)
        if labeler is not None and not (hasattr(labeler, "label") and hasattr(labeler, "words")):
            raise ValueError(f"labeler must have label(dense) and words, got {type(labeler).__name__}")
        self.labeler = labeler
        self.sampler = Compose(samplers)
        loss = dict(type="InfoNCELoss") if loss is None else loss
        self.loss = ALIGN_LOSSES.build(loss) if isinstance(loss, dict) else loss
        if not isinstance(self.loss, nn.Module):
            raise ValueError(f"loss must be an nn.Module or a config dict, got {type(self.loss).__name__}")
        self.loss_weight = check_number("loss_weight (λ)", loss_weight, low=0)
        if words is None and labeler is not None:
            words = labeler.words
        self.words = None if words is None else list(words)
        self.register_buffer("word_table", None, persistent=False)
        self.register_buffer("word_valid", None, persistent=False)

    # ------------------------------------------------------------------ word table
    @property
    def num_words(self) -> int | None:
        return None if self.words is None else len(self.words)

    def build_word_table(self, tokenizer, embedding, dtype: torch.dtype | None = None) -> None:
        """Build the (V, E) table of Eq. 8 from the LLM's tokenizer and input embeddings, once.

        Call before the embedding matrix is sharded (ZeRO-3). Words that
        tokenize to nothing get ``valid=False``; their pairs are dropped and
        counted in ``align_pairs_invalid_word``.
        """
        if self.words is None:
            raise ValueError(
                "SEAAligner has no word list: without a labeler pass words=[...] (the list the labels' ids index)"
            )
        self.set_word_table(build_word_table(tokenizer, embedding, self.words, on_empty="mask", dtype=dtype))

    def set_word_table(self, table) -> None:
        """Use an existing ``WordTable`` (``table`` (V, E), ``valid`` Bool[V])."""
        if self.words is not None and table.table.shape[0] != len(self.words):
            raise ValueError(f"word table has {table.table.shape[0]} rows, the word list {len(self.words)} words")
        self.word_table = table.table.detach()
        self.word_valid = table.valid.to(device=table.table.device, dtype=torch.bool)

    # ------------------------------------------------------------------ forward
    def sample(self, labels: PatchLabels, generator: torch.Generator | None = None) -> tuple[PairSet, dict]:
        """Labels -> sampled pairs, with the counts logged at each stage (plain ints)."""
        pairs = PairSet.from_labels(labels)
        stats = {"align_pairs_candidates": len(pairs)}
        if self.word_valid is not None and len(pairs):
            # (M,) Bool: a word the LLM cannot embed has no target; drop it before any draw.
            ok = self.word_valid.to(pairs.word.device)[pairs.word]
            stats["align_pairs_invalid_word"] = int((~ok).sum())
            pairs = pairs.select(ok)
        else:
            stats["align_pairs_invalid_word"] = 0
        pairs, kept = self.sampler.sample_counted(pairs, labels.grid, generator)
        stats.update({f"align_pairs_after_{stage}": n for stage, n in kept.items()})
        return pairs, stats

    def forward(
        self,
        visual: Tensor,
        dense: Tensor | None = None,
        labels: PatchLabels | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Align loss of one batch.

        Args:
            visual: (B, P, E) adapter outputs (the visual tokens, before splicing).
            dense: (B, P, C) the vision encoder's dense joint-space embeddings
                (labelled with ``labeler.label``), or
            labels: precomputed ``PatchLabels`` for the same B images (cache).
            generator: for the samplers' draws; None uses torch's global RNG
                (saved by ``RNGStateHook``, so resumed runs draw alike).

        Returns:
            ``loss_align`` (λ·L_a, fp32 scalar with a graph) and, for logging:
            ``align_temperature`` (inf once the temperature diverged),
            ``align_label_coverage`` (fraction of patches with at least one
            label), ``align_patches_nonfinite`` (patches whose dense embedding
            held NaN/inf: they get no label), ``align_pairs_candidates``,
            ``align_pairs_invalid_word``, ``align_pairs_after_<stage>`` per sampler.
        """
        if self.word_table is None:
            raise ValueError("SEAAligner.word_table is not set: call build_word_table(tokenizer, embedding) first")
        if not isinstance(visual, Tensor) or visual.dim() != 3:
            shape = tuple(visual.shape) if isinstance(visual, Tensor) else type(visual).__name__
            raise ValueError(f"visual must be (B, P, E) adapter outputs, got {shape}")
        if visual.shape[-1] != self.word_table.shape[1]:
            raise ValueError(
                f"visual has width E={visual.shape[-1]}, the word table {self.word_table.shape[1]}; "
                "they must both be the LLM's embedding width"
            )
        nonfinite = None
        if labels is None:
            if dense is None:
                raise ValueError("SEAAligner needs dense embeddings (dense=...) or precomputed labels (labels=...)")
            if self.labeler is None:
                raise ValueError("SEAAligner has no labeler to label dense embeddings; pass labels=PatchLabels")
            dense = dense.detach()
            labels = self.labeler.label(dense)
            # (B, P) Bool: a patch whose embedding holds NaN/inf has no meaningful label; it gets none
            # and is counted (align_patches_nonfinite; NonFinitePatchesHook warns in the training log).
            nonfinite = ~torch.isfinite(dense).all(dim=-1)
            if bool(nonfinite.any()):
                empty = nonfinite.to(labels.words.device)[..., None]
                labels = PatchLabels(words=labels.words.masked_fill(empty, EMPTY_WORD),
                                     scores=labels.scores.masked_fill(empty, 0.0), grid=labels.grid)
        if not isinstance(labels, PatchLabels):
            raise ValueError(f"labels must be PatchLabels, got {type(labels).__name__}")
        b, p, _ = visual.shape
        if labels.batch_size != b or labels.num_patches != p:
            raise ValueError(
                f"labels cover {labels.batch_size} images x {labels.num_patches} patches, visual (B, P)=({b}, {p})"
            )
        labels = labels.to(visual.device)
        pairs, stats = self.sample(labels, generator)
        x = visual[pairs.batch, pairs.patch]  # (N, E) sampled visual tokens
        t = self.word_table[pairs.word].to(visual.dtype)  # (N, E) label embeddings (Eq. 8)
        loss = self.loss(x, t)
        out = {"loss_align": loss * self.loss_weight}
        device = visual.device
        with gathered(self.loss.parameters()):  # ZeRO-3 releases the loss's parameters after its forward
            temperature = float(self.loss.temperature)
        out["align_temperature"] = torch.tensor(temperature, device=device)
        coverage = (labels.words[..., 0] != EMPTY_WORD).float().mean() if labels.words.shape[-1] else 0.0
        out["align_label_coverage"] = torch.as_tensor(coverage, dtype=torch.float32, device=device)
        out["align_patches_nonfinite"] = torch.tensor(0.0 if nonfinite is None else float(nonfinite.sum()), device=device)
        for key, value in stats.items():
            out[key] = torch.tensor(float(value), device=device)
        return out

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, sampler={self.sampler!r}, labeler={self.labeler!r}"
