"""``AlignmentEvaluator``: what ``LLaVAModel(mode='align')`` measures on one batch, the vision side only.

It labels each image (cached ``PatchLabels``, else its labeler on the encoder's
dense output), scores the visual tokens against the word table with
:mod:`alignkit.engine.metrics.functional` and returns one small dict per image
for :class:`~alignkit.engine.metrics.AlignmentMetric` (see there for the
fields), so no (P, E) tensor leaves the device. No LLM forward: only its input
embeddings (the word table of Eq. 8, the caption tokens of TACS).

The word table is the aligner's when the labeler's words are the aligner's
(no second (V, E) copy), else one built here from the LLM's embeddings and
rebuilt when they change (a stage-2 run trains them; a checkpoint loads
others), so the metrics never score against stale embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignkit.datasets.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from alignkit.engine.metrics.functional import label_ranks, nearest_word_hits, tacs
from alignkit.models.zero3 import gathered, is_partitioned
from alignkit.structures import PatchLabels
from alignkit.utils.validate import check_choice, check_int
from alignkit.word_table import build_word_table, word_token_ids

AGREEMENT = ("words", "vocab")
SETTINGS = dict(labeler=None, agreement="words", tacs_top=10, chunk_size=4096)


def check_align_eval(align_eval: dict | None) -> dict:
    """``LLaVAModel(align_eval=...)`` with its defaults filled in, validated."""
    cfg = dict(SETTINGS)
    if align_eval is None:
        return cfg
    if not isinstance(align_eval, dict):
        raise ValueError(f"align_eval must be a dict or None, got {type(align_eval).__name__}")
    unknown = set(align_eval) - set(cfg)
    if unknown:
        raise ValueError(f"align_eval has unknown key(s) {sorted(unknown)}; expected some of {sorted(cfg)}")
    cfg.update(align_eval)
    check_choice("align_eval.agreement", cfg["agreement"], AGREEMENT)
    for key in ("tacs_top", "chunk_size"):
        check_int(f"align_eval.{key}", cfg[key], low=1)
    return cfg


class AlignmentEvaluator(nn.Module):
    """Per-image alignment measurements of a ``LLaVAModel`` (module docstring).

    Args:
        labeler: labels the dense embeddings of images that come without cached
            labels (None: cached labels only).
        agreement: ``'words'`` (nearest row of the word table) or ``'vocab'``
            (nearest token of the LLM's whole input embeddings, a hit when it is
            a token of a top-n word).
        tacs_top: TACS averages each image's top ``tacs_top`` values (10, the paper's).
        chunk_size: word-table rows scored at once.

    Its word table (``word_table``, ``word_valid``, ``word_tokens``) is made by
    :meth:`build_tables`; the buffers are non-persistent (never in checkpoints).
    """

    def __init__(self, labeler=None, agreement: str = "words", tacs_top: int = 10, chunk_size: int = 4096) -> None:
        super().__init__()
        settings = check_align_eval(dict(agreement=agreement, tacs_top=tacs_top, chunk_size=chunk_size))
        self.labeler = labeler  # not an nn.Module: its open_clip model is the encoder's tower
        self.agreement, self.tacs_top, self.chunk_size = settings["agreement"], settings["tacs_top"], settings["chunk_size"]
        self.register_buffer("word_table", None, persistent=False)
        self.register_buffer("word_valid", None, persistent=False)
        self.register_buffer("word_tokens", None, persistent=False)
        self.uses_aligner_table = False
        self._words: list[str] | None = None  # of its own table
        self._table_version: int | None = None  # the embedding's version counter when its own table was built

    def build_tables(self, tokenizer, embedding: nn.Embedding, aligner=None) -> None:
        """The word table (and, for agreement='vocab', each word's token ids) the measurements score against."""
        words = getattr(self.labeler, "words", None)
        aligner_words = getattr(aligner, "words", None)
        if aligner is not None and aligner.word_table is not None and (
            words is None or list(words) == list(aligner_words or [])
        ):
            words = aligner_words
            self.uses_aligner_table = True  # no second (V, E) buffer: .to() would copy it twice
        elif words is not None:
            self._words = list(words)
            self._build_own_table(tokenizer, embedding)
        if words is not None and self.agreement == "vocab":
            ids = word_token_ids(tokenizer, list(words))
            width = max((len(i) for i in ids), default=0) or 1
            tokens = torch.full((len(ids), width), -1, dtype=torch.long)
            for i, row in enumerate(ids):  # once, at build time
                tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            self.word_tokens = tokens

    def _build_own_table(self, tokenizer, embedding: nn.Embedding) -> None:
        table = build_word_table(tokenizer, embedding, self._words, on_empty="mask")
        self.word_table, self.word_valid = table.table.detach(), table.valid
        self._table_version = embedding.weight._version

    def refresh(self, tokenizer, embedding: nn.Embedding) -> bool:
        """Rebuild its own word table when the LLM's embeddings changed since it was built (stage 2 trains them;
        a checkpoint loads others); returns whether it did. The check is the weight's in-place version counter,
        which every optimiser step and ``load_state_dict`` bump: free when nothing changed. (The aligner's table,
        when it is the one scored, is the aligner's to keep: ``LLaVAModel`` rebuilds it after loading weights.)"""
        weight = embedding.weight
        if self.word_table is None or is_partitioned(weight) or weight._version == self._table_version:
            return False
        self._build_own_table(tokenizer, embedding)
        return True

    def tables(self, aligner=None) -> tuple[Tensor | None, Tensor | None]:
        """The (V, E) word table and Bool[V] valid rows scored against."""
        if self.uses_aligner_table:
            return aligner.word_table, aligner.word_valid
        return self.word_table, self.word_valid

    def can_run(self, aligner=None) -> bool:
        """Whether it can label images itself (a labeler) and has a word table."""
        return self.labeler is not None and self.tables(aligner)[0] is not None

    @torch.no_grad()
    def forward(self, model, inputs: dict, patch_labels: PatchLabels | None) -> list[dict]:
        """One dict per image row of ``inputs`` (``llava_collate``'s) for ``AlignmentMetric``."""
        self.refresh(model.tokenizer, model.llm.get_input_embeddings())
        table, valid = self.tables(model.aligner)
        if table is None:
            raise ValueError("mode='align' needs a word table: give the model an aligner or align_eval.labeler")
        input_ids, has_image = inputs["input_ids"], inputs.get("has_image")
        images = model.select_images(inputs.get("images"), has_image)
        if images is None or images.shape[0] == 0:
            return []
        with model.autocast(input_ids.device):
            visual, dense = model.encode_images(images)  # (B, P, E), (B, P, C)
        visual = visual.float()
        if patch_labels is None:
            if self.labeler is None:
                raise ValueError("mode='align' needs labels: cached patch_labels, an aligner labeler or align_eval.labeler")
            patch_labels = self.labeler.label(dense.detach())
        patch_labels = patch_labels.to(visual.device)
        b, p, _ = visual.shape
        if patch_labels.batch_size != b or patch_labels.num_patches != p:
            raise ValueError(f"labels cover (B, P)=({patch_labels.batch_size}, {patch_labels.num_patches}), "
                             f"visual ({b}, {p})")
        table = table.to(visual.device)
        valid = None if valid is None else valid.to(visual.device)
        chunk = self.chunk_size
        # Label retrieval and label cosine on every labelled patch with its top-1 label (deterministic:
        # validation must not draw from the RNG that training's samplers use).
        top1 = patch_labels.words[..., 0].long() if patch_labels.top_n else patch_labels.words.new_full((b, p), -1)
        labelled = top1 >= 0
        if valid is not None:
            labelled &= valid[top1.clamp(min=0)]
        bi, pi = labelled.nonzero(as_tuple=True)
        x, w = visual[bi, pi], top1[bi, pi]  # (N, E), (N,)
        ranks = label_ranks(x, table, w, valid=valid, chunk_size=chunk)
        cos = (F.normalize(x, dim=-1) * F.normalize(table[w].float(), dim=-1)).sum(-1)
        embed = model.llm.get_input_embeddings()
        if self.agreement == "vocab":
            with gathered(embed.parameters()):  # read outside the embedding's forward: whole under ZeRO-3
                vocab = embed.weight.detach()
                hit, has = nearest_word_hits(visual, vocab, patch_labels, self.word_tokens, chunk_size=chunk)
        else:
            hit, has = nearest_word_hits(visual, table, patch_labels, valid=valid, chunk_size=chunk)
        # TACS: the caption = supervised tokens of the image's row, special tokens (EOS, ...) left out.
        rows = input_ids if has_image is None else input_ids[has_image.to(torch.bool)]
        labels = inputs.get("labels")
        if labels is None:
            raise ValueError("mode='align' needs inputs['labels'] to find each caption's tokens")
        labels = labels if has_image is None else labels[has_image.to(torch.bool)]
        special = torch.tensor(sorted(set(getattr(model.tokenizer, "all_special_ids", None) or [])),
                               dtype=torch.long, device=rows.device)
        caption = (labels != IGNORE_INDEX) & (rows != IMAGE_TOKEN_INDEX) & ~torch.isin(rows, special)
        caption_embeds = embed(rows.clamp(min=0)).float()  # (B, T, E)
        scores = tacs(visual, caption_embeds, caption, top=self.tacs_top)
        counts = torch.bincount(bi, minlength=b).tolist()
        ranks, cos = ranks.cpu().split(counts), cos.cpu().split(counts)
        hit_n, has_n = hit.sum(-1).tolist(), has.sum(-1).tolist()
        return [
            dict(label_ranks=ranks[i], label_cos=cos[i], agree_hits=hit_n[i], agree_tokens=has_n[i],
                 tacs=float(scores[i]))
            for i in range(b)
        ]

    def extra_repr(self) -> str:
        return f"agreement={self.agreement!r}, tacs_top={self.tacs_top}, chunk_size={self.chunk_size}"
