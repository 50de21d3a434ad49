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
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.model import BaseModel
from torch import Tensor

from alignkit.models.builders import as_dtype, build_llm, build_tokenizer
from alignkit.models.splice import splice_visual_tokens
from alignkit.registry import ADAPTERS, MODELS
from alignkit.structures import PatchLabels

PARTS = ("vision_encoder", "adapter", "llm", "aligner")
MODES = ("loss", "tensor", "predict")


def _labeler_shares_tower(labeler_cfg: dict, encoder_cfg: dict) -> dict:
    """The labeler config with the encoder's model filled in, so both use one loaded open_clip model."""
    labeler_cfg = dict(labeler_cfg)
    for key in ("model_name", "pretrained", "precision"):
        if key in encoder_cfg:
            mine = labeler_cfg.setdefault(key, encoder_cfg[key])
            if mine != encoder_cfg[key]:
                raise ValueError(
                    f"aligner.labeler.{key}={mine!r} differs from vision_encoder.{key}={encoder_cfg[key]!r}; "
                    "the labeler labels the encoder's own dense output, so they must be the same model "
                    "(leave it out of the labeler config)"
                )
    if encoder_cfg.get("dense_mode") is not None:
        labeler_cfg.setdefault("dense_mode", encoder_cfg["dense_mode"])
    return labeler_cfg


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
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        trainable = [trainable] if isinstance(trainable, str) else list(trainable)
        bad = [t for t in trainable if t not in PARTS]
        if bad:
            raise ValueError(f"trainable has unknown part(s) {bad}; expected a subset of {list(PARTS)}")
        if "aligner" in trainable and aligner is None:
            raise ValueError("trainable lists 'aligner' but the model has no aligner (aligner=None)")
        self.trainable = trainable
        self.autocast_dtype = as_dtype(autocast_dtype)
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
            from alignkit.registry import LABELERS

            labeler = LABELERS.build(_labeler_shares_tower(aligner_cfg["labeler"], vision_cfg))
            vision_cfg["loaded"] = labeler.loaded
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
        if "vision_encoder" in trainable:
            self.vision_encoder.frozen = False
        self.vision_encoder.tower.requires_grad_(not self.vision_encoder.frozen)

        self.llm = build_llm(llm, self.tokenizer, init_empty=init_empty, seed=llm_seed)
        llm_dim = self.llm.get_input_embeddings().weight.shape[1]
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
                # Built here, before any wrapper shards the embedding matrix (ZeRO-3).
                self.aligner.build_word_table(self.tokenizer, self.llm.get_input_embeddings())

        if adapter_weights and not init_empty:  # a meta build has no weights to load into
            from alignkit.models.artifact import load_adapter_into

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
            p, e = self.num_visual_tokens, embed.weight.shape[1]
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
                -> logits (B, L, vocab); ``'predict'`` -> greedy new token ids per row.
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
