"""``LLaVAModel``: vision encoder → adapter → Hugging Face causal LM, with SEA's aligner as an option.

An mmengine ``BaseModel``; composition only. One training step (stage 1 with SEA):

    images ──► vision encoder (one forward) ──► features (B, P, D) ──► adapter ──► visual (B, P, E)
                        └──► dense (B, P, C) ──► aligner (labels, samplers, word table) ──► loss_align
    input_ids with −200 placeholders ──► splice visual tokens ──► LLM ──► loss_lm

Returns ``loss_lm`` and ``loss_align`` (already × λ); everything else it
returns is logged only and its key holds no "loss". The objective, SEA's
Eq. 11, is written out in :meth:`LLaVAModel.parse_losses`:
``loss = loss_lm + λ·loss_align``.

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
label images (an aligner with a labeler, or ``align_eval.labeler``): its
``AlignmentEvaluator`` (alignkit/engine/metrics) measures the vision side only
(no LLM forward) and returns one dict per image with what ``AlignmentMetric``
averages (label ranks and cosines, nearest-word hits, TACS). Otherwise they
run ``mode='predict'``: greedy generation, :meth:`LLaVAModel.generate`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.model import BaseModel
from torch import Tensor

from alignkit.engine.metrics.alignment_evaluator import AlignmentEvaluator, check_align_eval
from alignkit.datasets.tokenizers import build_tokenizer
from alignkit.export.artifact import load_adapter_into
from alignkit.models.builders import build_llm
from alignkit.models.splice import splice_visual_tokens
from alignkit.models.zero3 import full_shape, gathered
from alignkit.registry import ADAPTERS, LABELERS, MODELS
from alignkit.towers.share import share_tower
from alignkit.utils.validate import as_dtype

PARTS = ("vision_encoder", "adapter", "llm", "aligner")
MODES = ("loss", "tensor", "predict", "align")
LOSS_KEYS = ("loss_lm", "loss_align")


def _check_trainable(trainable, aligner) -> list[str]:
    trainable = [trainable] if isinstance(trainable, str) else list(trainable)
    bad = [t for t in trainable if t not in PARTS]
    if bad:
        raise ValueError(f"trainable has unknown part(s) {bad}; expected a subset of {list(PARTS)}")
    if "aligner" in trainable and aligner is None:
        raise ValueError("trainable lists 'aligner' but the model has no aligner (aligner=None)")
    return trainable


def _build_labelers(aligner_cfg: dict | None, eval_cfg, vision_cfg: dict):
    """``(aligner's labeler, align_eval's labeler)``, built on the encoder's model (one tower for all three).

    The same config for both is built once. ``vision_cfg['loaded']`` is set to
    the labelers' loaded open_clip model, which the encoder then takes.
    """
    labeler = eval_labeler = None
    if aligner_cfg is not None and isinstance(aligner_cfg.get("labeler"), dict):
        labeler = LABELERS.build(share_tower(aligner_cfg["labeler"], vision_cfg))
        vision_cfg["loaded"] = labeler.loaded
    if isinstance(eval_cfg, dict):
        if labeler is not None and eval_cfg == aligner_cfg.get("labeler"):
            eval_labeler = labeler
        else:
            encoder_cfg = {k: v for k, v in vision_cfg.items() if k != "loaded"}
            eval_labeler = LABELERS.build(share_tower(eval_cfg, encoder_cfg, name="align_eval.labeler"))
            vision_cfg.setdefault("loaded", eval_labeler.loaded)
    else:
        eval_labeler = eval_cfg  # None or an already built labeler
    return labeler, eval_labeler


def _check_dense_mode(name: str, labeler, encoder) -> None:
    mode = getattr(labeler, "dense_mode", None)
    if mode is not None and mode != encoder.dense_mode:
        raise ValueError(
            f"{name} scores dense_mode={mode!r} but the vision encoder produces "
            f"{encoder.dense_mode!r}; set vision_encoder.dense_mode to match"
        )


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
            configs (shape checks; no weights, no download); no labeler, no word table.
        llm_seed: seed of the LLM's random weights when ``llm.pretrained`` is None.
        max_new_tokens: greedy generation length in ``mode='predict'``.
        data_preprocessor: mmengine data preprocessor config (default: move to device).
        align_eval: settings of ``mode='align'`` (the alignment metrics,
            :class:`~alignkit.engine.metrics.AlignmentEvaluator`), all optional:
            ``labeler`` (a labeler config; default: the aligner's. Give it to
            measure a model without an aligner, e.g. the LLaVA-1.5 baseline, on
            the same labels; the same config as the aligner's is built once),
            ``agreement`` (``'words'`` or ``'vocab'``), ``tacs_top`` (10, the
            paper's) and ``chunk_size`` (word-table rows scored at once, 4096).
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
        self.trainable = _check_trainable(trainable, aligner)
        self.autocast_dtype = as_dtype("autocast_dtype", autocast_dtype)
        self.max_new_tokens = int(max_new_tokens)
        # A meta build needs the tokenizer only to size the vocabulary (vocab_size=None, the demo);
        # hub tokenizers would be a download.
        needs_tokenizer = not init_empty or (llm.get("config") or {}).get("vocab_size", 0) is None
        self.tokenizer = build_tokenizer(tokenizer) if needs_tokenizer else None
        eval_settings = check_align_eval(align_eval)
        eval_labeler_cfg = eval_settings.pop("labeler")
        vision_cfg, aligner_cfg = dict(vision_encoder), None if aligner is None else dict(aligner)
        if init_empty:  # a labeler needs real weights (its text bank); so does a word table
            labeler = eval_labeler = None
            vision_cfg["init_empty"] = True
            if aligner_cfg is not None:
                aligner_cfg.pop("labeler", None)
        else:
            labeler, eval_labeler = _build_labelers(aligner_cfg, eval_labeler_cfg, vision_cfg)

        self.vision_encoder = MODELS.build(vision_cfg)
        _check_dense_mode("the labeler", labeler, self.vision_encoder)
        _check_dense_mode("align_eval.labeler", eval_labeler, self.vision_encoder)
        self.llm = build_llm(llm, self.tokenizer, init_empty=init_empty, seed=llm_seed)
        embedding = self.llm.get_input_embeddings()
        llm_dim = full_shape(embedding.weight)[1]  # the LLM may be built ZeRO-3-partitioned
        self.adapter = ADAPTERS.build(
            adapter, default_args=dict(vision_dim=self.vision_encoder.vision_dim, llm_dim=llm_dim)
        )
        self.aligner = None if aligner_cfg is None else self._build_aligner(aligner_cfg, labeler, init_empty)
        # The labels and word table of mode='align': the aligner's unless align_eval names a labeler.
        if eval_labeler is None:
            eval_labeler = getattr(self.aligner, "labeler", None)
        self.align_evaluator = AlignmentEvaluator(eval_labeler, **eval_settings)
        if init_empty:
            self.adapter.to_empty(device="meta")
        else:
            with gathered(embedding.parameters()):  # whole for this one read under ZeRO-3
                self.align_evaluator.build_tables(self.tokenizer, embedding, self.aligner)
            if adapter_weights:
                load_adapter_into(adapter_weights, self.adapter, None)
        self._freeze()
        if gradient_checkpointing:
            self._checkpoint_llm()

    def _build_aligner(self, aligner_cfg: dict, labeler, init_empty: bool):
        if labeler is not None:
            aligner_cfg["labeler"] = labeler
        aligner = MODELS.build(aligner_cfg)
        if not init_empty:
            if self.tokenizer is None:
                raise ValueError("the aligner's word table needs the LLM's tokenizer: set LLaVAModel(tokenizer=...)")
            # Built once, here, from the whole embedding matrix: under ZeRO-3 the LLM is built
            # partitioned (from_pretrained under HfDeepSpeedConfig) and gathered for this one read.
            embed = self.llm.get_input_embeddings()
            with gathered(embed.parameters()):
                aligner.build_word_table(self.tokenizer, embed)
        return aligner

    def _freeze(self) -> None:
        """Everything not in ``trainable`` stops training (``requires_grad=False``)."""
        if "vision_encoder" in self.trainable:
            self.vision_encoder.frozen = False
        self.vision_encoder.tower.requires_grad_(not self.vision_encoder.frozen)
        for name in PARTS:
            part = getattr(self, name)
            if part is not None and name != "vision_encoder":
                part.requires_grad_(name in self.trainable)

    def _checkpoint_llm(self) -> None:
        # transformers 5 renamed the switch; non-reentrant so a frozen LLM still passes gradients to its inputs.
        if hasattr(self.llm, "activation_checkpointing_enable"):
            self.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.llm.config.use_cache = False

    # ------------------------------------------------------------------ evaluation
    @property
    def can_align_eval(self) -> bool:
        """Whether mode='align' can label images itself (validation then runs it)."""
        return self.align_evaluator.can_run(self.aligner)

    @property
    def eval_mode(self) -> str:
        """The forward mode of validation and testing: ``'align'`` when the model can label images, else
        ``'predict'``. Read by :meth:`val_step` and, under DeepSpeed, by mmengine's engine wrapper
        (``alignkit.engine.compat``, fix 8)."""
        return "align" if self.can_align_eval else "predict"

    def val_step(self, data):
        """Validation: :attr:`eval_mode` (the alignment metrics, else greedy generation)."""
        data = self.data_preprocessor(data, False)
        return self._run_forward(data, mode=self.eval_mode)

    def test_step(self, data):
        return self.val_step(data)

    # ------------------------------------------------------------------ pieces
    @property
    def num_visual_tokens(self) -> int:
        """P: visual tokens per image."""
        return self.vision_encoder.num_patches

    @staticmethod
    def select_images(images, has_image: Tensor | None) -> Tensor | None:
        """(N_img, 3, H, W): the images of the rows that have one, in row order."""
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

    def autocast(self, device: torch.device):
        """The forward's autocast context on ``device`` (``autocast_dtype``; a no-op for None)."""
        return torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def _prepare(self, input_ids, attention_mask, labels, images, has_image):
        images = self.select_images(images, has_image)
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
            mode: ``'loss'`` -> ``loss_lm``, ``loss_align`` and logged values
                (:meth:`parse_losses` adds them up, Eq. 11); ``'tensor'`` ->
                logits (B, L, vocab); ``'predict'`` -> greedy new token ids per
                row (:meth:`generate`); ``'align'`` -> one dict per image row
                for ``AlignmentMetric`` (``AlignmentEvaluator``).
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
            return self.align_evaluator(self, inputs, patch_labels)
        if mode == "predict":  # greedy, each row's new token ids
            return list(self.generate(input_ids, inputs.get("images"), inputs.get("attention_mask"), has_image,
                                      max_new_tokens=self.max_new_tokens, do_sample=False))
        with self.autocast(input_ids.device):
            spliced, visual, dense = self._prepare(
                input_ids, inputs.get("attention_mask"), inputs.get("labels"), inputs.get("images"), has_image
            )
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

    def parse_losses(self, losses: dict) -> tuple[Tensor, dict]:
        """SEA's Eq. 11, the objective: ``loss = loss_lm + λ·loss_align``, and every value to log.

        ``losses`` is :meth:`forward`'s ``mode='loss'`` dict; its ``loss_align`` is
        already ``λ·L_align`` (``SEAAligner.loss_weight``), so the sum below is
        Eq. 11. mmengine's own rule (sum every key holding "loss") gives the
        same number; writing the sum out puts the objective where a reader
        looks and makes any other key holding "loss" an error instead of a
        silent extra term. Logged: ``loss`` (the sum) and every entry of ``losses``.
        """
        extra = [k for k in losses if "loss" in k and k not in LOSS_KEYS]
        if extra:
            raise ValueError(f"forward returned {extra}; only {list(LOSS_KEYS)} may hold 'loss' (they are summed)")
        log_vars = {k: v.mean() for k, v in losses.items()}
        loss = log_vars["loss_lm"]
        if "loss_align" in log_vars:
            loss = loss + log_vars["loss_align"]  # Eq. 11: loss_lm + λ·L_align
        return loss, {"loss": loss, **log_vars}

    @torch.no_grad()
    def generate(self, input_ids: Tensor, images: Tensor | None = None, attention_mask: Tensor | None = None,
                 has_image: Tensor | None = None, **generation_kwargs) -> Tensor:
        """Long[B, N]: new token ids continuing ``input_ids``, under the model's autocast.

        Args:
            input_ids: Long[B, T] prompts with ``IMAGE_TOKEN_INDEX`` placeholders.
            images: (N_img, 3, H, W) preprocessed images, one per placeholder row
                (or (B, 3, H, W) with ``has_image``).
            attention_mask: [B, T] (None: every position).
            has_image: Bool[B], which rows of a (B, ...) ``images`` are real.
            generation_kwargs: go to the LLM's ``generate`` (``max_new_tokens``,
                ``do_sample``, ``temperature``, ``top_p``, ``streamer``...);
                ``eos_token_id``/``pad_token_id`` default to the tokenizer's.
        """
        for key in ("eos_token_id", "pad_token_id"):
            generation_kwargs.setdefault(key, getattr(self.tokenizer, key, None))
        with self.autocast(input_ids.device):
            spliced, _, _ = self._prepare(input_ids, attention_mask, None, images, has_image)
            return self.llm.generate(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                                     **generation_kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision_encoder.train(mode)  # keeps a frozen tower in eval mode
        return self
