"""``LLaVAModel``: vision encoder → adapter → Hugging Face causal LM, with SEA's aligner as an option.

An mmengine ``BaseModel``; composition only. One training step (stage 1 with SEA):

    images ──► vision encoder (one forward) ──► features (B, P, D) ──► adapter ──► visual (B, P, E)
                        └──► dense (B, P, C) ──► aligner (labels, samplers, word table) ──► loss_align
    input_ids with −200 placeholders ──► splice visual tokens ──► LLM ──► loss_lm

Returns ``loss_lm`` and ``loss_align`` (already × λ); everything else it
returns is logged only and its key holds no "loss".

What trains is one list, ``trainable``: any of ``'vision_encoder'``,
``'adapter'``, ``'llm'``, ``'aligner'`` (the align loss's temperature). Stage 1:
``['adapter', 'aligner']`` (LLaVA-1.5 baseline: ``['adapter']``); stage 2:
``['adapter', 'llm']``; SEA-PRIME adds ``'vision_encoder'`` (its own lr through
``optim_wrapper.paramwise_cfg.custom_keys={'vision_encoder': dict(lr_mult=...)}``).
Everything not listed is frozen (``requires_grad=False``).

Precision: the forward runs under ``torch.autocast(dtype=autocast_dtype)``
(bf16 by default) on CPU and GPU alike, so configs need no AmpOptimWrapper;
the align loss computes in fp32 itself.

Batch format: ``llava_collate``'s ``dict(inputs=..., data_samples=...)``;
``inputs``: ``input_ids`` Long[B, T] with ``IMAGE_TOKEN_INDEX`` placeholders,
``labels`` Long[B, T], ``attention_mask`` [B, T], ``images`` (B, 3, H, W) with
``has_image`` Bool[B] (or images (N_img, 3, H, W), one per placeholder, without
``has_image``); ``data_samples['patch_labels']``: cached ``PatchLabels`` (B rows)
or None.

Validation: ``val_step``/``test_step`` run ``mode='align'`` when the model can
label images (an aligner with a labeler, or ``align_eval.labeler``): the
vision side only (no LLM forward), returning one dict per image with what
``AlignmentMetric`` averages (label ranks and cosines, nearest-word hits,
TACS). Otherwise they run ``mode='predict'`` (greedy generation).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.model import BaseModel
from torch import Tensor

from alignkit.datasets.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from alignkit.datasets.tokenizers import build_tokenizer
from alignkit.engine.metrics.functional import label_ranks, nearest_word_hits, tacs
from alignkit.export.artifact import load_adapter_into
from alignkit.models.builders import build_llm
from alignkit.models.splice import splice_visual_tokens
from alignkit.models.zero3 import full_shape, gathered
from alignkit.registry import ADAPTERS, LABELERS, MODELS
from alignkit.structures import PatchLabels
from alignkit.towers.share import share_tower
from alignkit.utils.validate import as_dtype
from alignkit.word_table import build_word_table, word_token_ids

PARTS = ("vision_encoder", "adapter", "llm", "aligner")
MODES = ("loss", "tensor", "predict", "align")
AGREEMENT = ("words", "vocab")


@MODELS.register_module()
class LLaVAModel(BaseModel):
    """A LLaVA-style MLLM with an optional SEA aligner (module docstring).

    Args:
        vision_encoder: config of the vision encoder (``OpenCLIPVisionEncoder``).
        adapter: config of the adapter (``ADAPTERS``); ``vision_dim``/``llm_dim`` are filled in.
        llm: ``dict(pretrained=..., config=..., dtype=..., attn_implementation=...)``
            (see :mod:`alignkit.models.builders`).
        tokenizer: the LLM's tokenizer or its config (needed for the aligner's
            word table, for ``vocab_size=None`` and for ``predict``).
        aligner: config of the ``SEAAligner`` or None (no SEA). A ``labeler``
            in it gets the vision encoder's model, loaded once for both.
        trainable: the parts that train (see the module docstring).
        autocast_dtype: ``'bfloat16'``, ``'float16'`` or None (no autocast).
        gradient_checkpointing: recompute the LLM's activations in backward.
        adapter_weights: an ``adapter.safetensors`` from stage 1 to start the adapter from.
        init_empty: build the encoder and the LLM on the meta device from their
            configs (shape checks; no weights, no download); no word table.
        llm_seed: seed of the LLM's random weights when ``llm.pretrained`` is None.
        max_new_tokens: greedy generation length in ``mode='predict'``.
        data_preprocessor: mmengine data preprocessor config (default: move to device).
        align_eval: settings of ``mode='align'`` (the alignment metrics), all optional:
            ``labeler`` (a labeler config; default: the aligner's. Give it to
            measure a model without an aligner, e.g. the LLaVA-1.5 baseline, on
            the same labels; the same config as the aligner's is built once),
            ``agreement`` (``'words'``: nearest row of the word table;
            ``'vocab'``: nearest token of the LLM's whole input embeddings, a hit
            when it is a token of a top-n word), ``tacs_top`` (10, the paper's)
            and ``chunk_size`` (word-table rows scored at once, 4096).
    """

    def __init__(
        self,
        vision_encoder: dict,
        adapter: dict,
        llm: dict,
        tokenizer=None,
        aligner: dict | None = None,
        trainable: Sequence[str] = ("adapter",),
        autocast_dtype: str | None = "bfloat16",
        gradient_checkpointing: bool = False,
        adapter_weights: str | None = None,
        init_empty: bool = False,
        llm_seed: int | None = 0,
        max_new_tokens: int = 32,
        data_preprocessor: dict | None = None,
        align_eval: dict | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        trainable = [trainable] if isinstance(trainable, str) else list(trainable)
        bad = [t for t in trainable if t not in PARTS]
        if bad:
            raise ValueError(f"trainable has unknown part(s) {bad}; expected a subset of {list(PARTS)}")
        if "aligner" in trainable and aligner is None:
            raise ValueError("trainable lists 'aligner' but the model has no aligner (aligner=None)")
        self.trainable = trainable
        self.autocast_dtype = as_dtype("autocast_dtype", autocast_dtype)
        self.max_new_tokens = int(max_new_tokens)
        # A meta build needs the tokenizer only to size the vocabulary (vocab_size=None, the demo);
        # hub tokenizers would be a download.
        needs_tokenizer = not init_empty or (llm.get("config") or {}).get("vocab_size", 0) is None
        self.tokenizer = build_tokenizer(tokenizer) if needs_tokenizer else None

        # The labeler (if any) loads the open_clip model; the encoder then takes its tower: one copy.
        vision_cfg = dict(vision_encoder)
        aligner_cfg = None if aligner is None else dict(aligner)
        labeler = None
        if aligner_cfg is not None and isinstance(aligner_cfg.get("labeler"), dict) and not init_empty:
            labeler = LABELERS.build(share_tower(aligner_cfg["labeler"], vision_cfg))
            vision_cfg["loaded"] = labeler.loaded
        self.align_eval = self._check_align_eval(align_eval)
        eval_labeler = None
        eval_labeler_cfg = self.align_eval.pop("labeler")
        if eval_labeler_cfg is not None and not init_empty:
            if aligner_cfg is not None and eval_labeler_cfg == aligner_cfg.get("labeler") and labeler is not None:
                eval_labeler = labeler
            elif isinstance(eval_labeler_cfg, dict):
                encoder_cfg = {k: v for k, v in vision_cfg.items() if k != "loaded"}
                eval_labeler = LABELERS.build(share_tower(eval_labeler_cfg, encoder_cfg, name="align_eval.labeler"))
                vision_cfg.setdefault("loaded", eval_labeler.loaded)
            else:
                eval_labeler = eval_labeler_cfg
        if init_empty:
            vision_cfg["init_empty"] = True
            if aligner_cfg is not None:
                aligner_cfg.pop("labeler", None)  # a text bank needs real weights
        self.vision_encoder = MODELS.build(vision_cfg)
        if labeler is not None and labeler.dense_mode != self.vision_encoder.dense_mode:
            raise ValueError(
                f"the labeler scores dense_mode={labeler.dense_mode!r} but the vision encoder produces "
                f"{self.vision_encoder.dense_mode!r}; set vision_encoder.dense_mode to match"
            )
        if eval_labeler is not None and getattr(eval_labeler, "dense_mode", None) not in (
            None, self.vision_encoder.dense_mode
        ):
            raise ValueError(
                f"align_eval.labeler scores dense_mode={eval_labeler.dense_mode!r} but the vision encoder produces "
                f"{self.vision_encoder.dense_mode!r}; set vision_encoder.dense_mode to match"
            )
        if "vision_encoder" in trainable:
            self.vision_encoder.frozen = False
        self.vision_encoder.tower.requires_grad_(not self.vision_encoder.frozen)

        self.llm = build_llm(llm, self.tokenizer, init_empty=init_empty, seed=llm_seed)
        llm_dim = full_shape(self.llm.get_input_embeddings().weight)[1]  # the LLM may be built ZeRO-3-partitioned
        self.adapter = ADAPTERS.build(
            adapter, default_args=dict(vision_dim=self.vision_encoder.vision_dim, llm_dim=llm_dim)
        )
        if init_empty:
            self.adapter.to_empty(device="meta")

        self.aligner = None
        if aligner_cfg is not None:
            if labeler is not None:
                aligner_cfg["labeler"] = labeler
            self.aligner = MODELS.build(aligner_cfg)
            if not init_empty:
                if self.tokenizer is None:
                    raise ValueError("the aligner's word table needs the LLM's tokenizer: set LLaVAModel(tokenizer=...)")
                # Built once, here, from the whole embedding matrix: under ZeRO-3 the LLM is built
                # partitioned (from_pretrained under HfDeepSpeedConfig) and gathered for this one read.
                embed = self.llm.get_input_embeddings()
                with gathered(embed.parameters()):
                    self.aligner.build_word_table(self.tokenizer, embed)

        # The labels and word table of mode='align': the aligner's unless align_eval names a labeler.
        self.eval_labeler = eval_labeler if eval_labeler is not None else getattr(self.aligner, "labeler", None)
        self.register_buffer("eval_word_table", None, persistent=False)
        self.register_buffer("eval_word_valid", None, persistent=False)
        self.register_buffer("eval_word_tokens", None, persistent=False)
        self._eval_table_is_aligners = False
        if not init_empty and (self.eval_labeler is not None or self.aligner is not None):
            with gathered(self.llm.get_input_embeddings().parameters()):
                self._build_eval_tables()

        if adapter_weights and not init_empty:  # a meta build has no weights to load into
            load_adapter_into(adapter_weights, self.adapter, None)

        for name in PARTS:
            part = getattr(self, name)
            if part is not None and name != "vision_encoder":
                part.requires_grad_(name in trainable)
        if gradient_checkpointing:
            # transformers 5 renamed the switch; non-reentrant so a frozen LLM still passes gradients to its inputs.
            if hasattr(self.llm, "activation_checkpointing_enable"):
                self.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.llm.config.use_cache = False

    # ------------------------------------------------------------------ alignment evaluation
    @staticmethod
    def _check_align_eval(align_eval) -> dict:
        cfg = dict(labeler=None, agreement="words", tacs_top=10, chunk_size=4096)
        if align_eval is None:
            return cfg
        if not isinstance(align_eval, dict):
            raise ValueError(f"align_eval must be a dict or None, got {type(align_eval).__name__}")
        unknown = set(align_eval) - set(cfg)
        if unknown:
            raise ValueError(f"align_eval has unknown key(s) {sorted(unknown)}; expected some of {sorted(cfg)}")
        cfg.update(align_eval)
        if cfg["agreement"] not in AGREEMENT:
            raise ValueError(f"align_eval.agreement must be one of {AGREEMENT}, got {cfg['agreement']!r}")
        for key in ("tacs_top", "chunk_size"):
            if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ValueError(f"align_eval.{key} must be a positive int, got {cfg[key]!r}")
        return cfg

    def _build_eval_tables(self) -> None:
        """The word table (and, for agreement='vocab', each word's token ids) that mode='align' scores against."""
        words = getattr(self.eval_labeler, "words", None)
        aligner_words = getattr(self.aligner, "words", None)
        if self.aligner is not None and self.aligner.word_table is not None and (
            words is None or list(words) == list(aligner_words or [])
        ):
            words = aligner_words
            self._eval_table_is_aligners = True  # no second (V, E) buffer: .to() would copy it twice
        elif words is not None:
            table = build_word_table(self.tokenizer, self.llm.get_input_embeddings(), list(words), on_empty="mask")
            self.eval_word_table, self.eval_word_valid = table.table.detach(), table.valid
        if words is not None and self.align_eval["agreement"] == "vocab":
            ids = word_token_ids(self.tokenizer, list(words))
            width = max((len(i) for i in ids), default=0) or 1
            tokens = torch.full((len(ids), width), -1, dtype=torch.long)
            for i, row in enumerate(ids):  # once, at build time
                tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            self.eval_word_tokens = tokens

    def _eval_tables(self) -> tuple[Tensor | None, Tensor | None]:
        """The (V, E) word table and Bool[V] valid rows that mode='align' scores against."""
        if self._eval_table_is_aligners:
            return self.aligner.word_table, self.aligner.word_valid
        return self.eval_word_table, self.eval_word_valid

    @property
    def can_align_eval(self) -> bool:
        """Whether mode='align' can label images itself (validation then runs it)."""
        return self.eval_labeler is not None and self._eval_tables()[0] is not None

    @torch.no_grad()
    def _align_eval(self, inputs: dict, patch_labels: PatchLabels | None) -> list[dict]:
        """mode='align': one dict per image row (see ``AlignmentMetric``); the vision side only."""
        table, valid = self._eval_tables()
        if table is None:
            raise ValueError("mode='align' needs a word table: give the model an aligner or align_eval.labeler")
        input_ids, has_image = inputs["input_ids"], inputs.get("has_image")
        images = self._select_images(inputs.get("images"), input_ids, has_image)
        if images is None or images.shape[0] == 0:
            return []
        with self._autocast(input_ids.device):
            visual, dense = self.encode_images(images)  # (B, P, E), (B, P, C)
        visual = visual.float()
        if patch_labels is None:
            if self.eval_labeler is None:
                raise ValueError("mode='align' needs labels: cached patch_labels, an aligner labeler or align_eval.labeler")
            patch_labels = self.eval_labeler.label(dense.detach())
        patch_labels = patch_labels.to(visual.device)
        b, p, _ = visual.shape
        if patch_labels.batch_size != b or patch_labels.num_patches != p:
            raise ValueError(f"labels cover (B, P)=({patch_labels.batch_size}, {patch_labels.num_patches}), "
                             f"visual ({b}, {p})")
        table = table.to(visual.device)
        valid = None if valid is None else valid.to(visual.device)
        chunk = self.align_eval["chunk_size"]
        # Label retrieval and label cosine on every labelled patch with its top-1 label (deterministic:
        # validation must not draw from the RNG that training's samplers use).
        top1 = patch_labels.words[..., 0].long() if patch_labels.top_n else patch_labels.words.new_full((b, p), -1)
        labelled = top1 >= 0
        if valid is not None:
            labelled &= valid[top1.clamp(min=0)]
        bi, pi = labelled.nonzero(as_tuple=True)
        x, w = visual[bi, pi], top1[bi, pi]  # (N, E), (N,)
        ranks = label_ranks(x, table, w, valid=valid, chunk_size=chunk)
        cos = (torch.nn.functional.normalize(x, dim=-1)
               * torch.nn.functional.normalize(table[w].float(), dim=-1)).sum(-1)
        if self.align_eval["agreement"] == "vocab":
            vocab = self.llm.get_input_embeddings().weight.detach()
            hit, has = nearest_word_hits(visual, vocab, patch_labels, self.eval_word_tokens, chunk_size=chunk)
        else:
            hit, has = nearest_word_hits(visual, table, patch_labels, valid=valid, chunk_size=chunk)
        # TACS: the caption = supervised tokens of the image's row, special tokens (EOS, ...) left out.
        rows = input_ids if has_image is None else input_ids[has_image.to(torch.bool)]
        labels = inputs.get("labels")
        if labels is None:
            raise ValueError("mode='align' needs inputs['labels'] to find each caption's tokens")
        labels = labels if has_image is None else labels[has_image.to(torch.bool)]
        special = torch.tensor(sorted(set(getattr(self.tokenizer, "all_special_ids", None) or [])),
                               dtype=torch.long, device=rows.device)
        caption = (labels != IGNORE_INDEX) & (rows != IMAGE_TOKEN_INDEX) & ~torch.isin(rows, special)
        embed = self.llm.get_input_embeddings()
        caption_embeds = embed(rows.clamp(min=0)).float()  # (B, T, E)
        scores = tacs(visual, caption_embeds, caption, top=self.align_eval["tacs_top"])
        counts = torch.bincount(bi, minlength=b).tolist()
        ranks, cos = ranks.cpu().split(counts), cos.cpu().split(counts)
        hit_n, has_n = hit.sum(-1).tolist(), has.sum(-1).tolist()
        return [
            dict(label_ranks=ranks[i], label_cos=cos[i], agree_hits=hit_n[i], agree_tokens=has_n[i],
                 tacs=float(scores[i]))
            for i in range(b)
        ]

    def val_step(self, data):
        """Validation: ``mode='align'`` when the model can label images, else ``mode='predict'``."""
        data = self.data_preprocessor(data, False)
        return self._run_forward(data, mode="align" if self.can_align_eval else "predict")

    def test_step(self, data):
        return self.val_step(data)

    # ------------------------------------------------------------------ pieces
    @property
    def num_visual_tokens(self) -> int:
        """P: visual tokens per image."""
        return self.vision_encoder.num_patches

    def _select_images(self, images, input_ids: Tensor, has_image: Tensor | None) -> Tensor | None:
        """(N_img, 3, H, W): one image per placeholder row, in row order."""
        if images is None:
            return None
        if isinstance(images, (list, tuple)):
            kept = [im for im in images if im is not None]
            return torch.stack(kept) if kept else None
        if has_image is not None:
            return images[has_image.to(torch.bool)]
        return images

    def encode_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) -> visual tokens (N, P, E) and dense embeddings (N, P, C)."""
        features, dense = self.vision_encoder(images)  # (N, P, D), (N, P, C)
        return self.adapter(features), dense  # (N, P, D) -> (N, P, E)

    def _autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def _prepare(self, input_ids, attention_mask, labels, images, has_image):
        images = self._select_images(images, input_ids, has_image)
        embed = self.llm.get_input_embeddings()
        if images is None or images.shape[0] == 0:
            p, e = self.num_visual_tokens, full_shape(embed.weight)[1]
            visual = embed.weight.new_zeros(0, p, e)
            dense = None
        else:
            visual, dense = self.encode_images(images)
        if attention_mask is not None:
            attention_mask = attention_mask.long()  # collate gives Bool; HF masks take ints
        spliced = splice_visual_tokens(input_ids, visual, embed, labels=labels, attention_mask=attention_mask)
        return spliced, visual, dense

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: dict, data_samples: dict | None = None, mode: str = "loss"):
        """One batch in ``llava_collate``'s format (module docstring).

        Args:
            inputs: ``input_ids``, ``attention_mask``, ``labels``, ``images``, ``has_image``.
            data_samples: may hold ``patch_labels`` (B rows, from a label cache);
                without them the aligner labels the encoder's dense output.
            mode: ``'loss'`` -> dict of losses and logged values; ``'tensor'``
                -> logits (B, L, vocab); ``'predict'`` -> greedy new token ids per row;
                ``'align'`` -> one dict per image row for ``AlignmentMetric`` (module docstring).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(inputs, dict) or "input_ids" not in inputs:
            raise ValueError(f"inputs must be a dict with input_ids (llava_collate's 'inputs'), got {type(inputs).__name__}")
        input_ids = inputs["input_ids"]
        has_image = inputs.get("has_image")
        patch_labels = (data_samples or {}).get("patch_labels") if isinstance(data_samples, dict) else None
        if patch_labels is not None and has_image is not None:
            patch_labels = patch_labels[has_image.to(device=patch_labels.words.device, dtype=torch.bool)]
        if mode == "align":
            return self._align_eval(inputs, patch_labels)
        with self._autocast(input_ids.device):
            spliced, visual, dense = self._prepare(
                input_ids, inputs.get("attention_mask"), inputs.get("labels"), inputs.get("images"), has_image
            )
            if mode == "predict":
                return self._generate(spliced)
            out = self.llm(
                inputs_embeds=spliced.inputs_embeds,
                attention_mask=spliced.attention_mask,
                labels=spliced.labels if mode == "loss" else None,
                use_cache=False,
            )
            if mode == "tensor":
                return out.logits
            if spliced.labels is None:
                raise ValueError("mode='loss' needs inputs['labels']")
            result = {"loss_lm": out.loss.float()}
            if self.aligner is not None and visual.shape[0] > 0:
                result.update(self.aligner(visual, dense=dense, labels=patch_labels))
        return result

    @torch.no_grad()
    def generate(self, input_ids: Tensor, images: Tensor | None = None, attention_mask: Tensor | None = None,
                 **generation_kwargs) -> Tensor:
        """Long[B, N]: new token ids continuing ``input_ids`` (``IMAGE_TOKEN_INDEX`` placeholders, one
        image (N_img, 3, H, W) per placeholder row), under the model's autocast; ``generation_kwargs`` go to
        the LLM's ``generate`` (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``streamer``...;
        ``eos_token_id``/``pad_token_id`` default to the tokenizer's)."""
        for key in ("eos_token_id", "pad_token_id"):
            generation_kwargs.setdefault(key, getattr(self.tokenizer, key, None))
        with self._autocast(input_ids.device):
            spliced, _, _ = self._prepare(input_ids, attention_mask, None, images, None)
            return self.llm.generate(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                                     **generation_kwargs)

    @torch.no_grad()
    def _generate(self, spliced) -> list[Tensor]:
        """Greedy continuation of each row (its new token ids, without the prompt)."""
        out = self.llm.generate(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=getattr(self.tokenizer, "pad_token_id", None),
        )
        return list(out)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision_encoder.train(mode)  # keeps a frozen tower in eval mode
        return self
