"""Tiny Hugging Face transformers CLIP / SigLIP models and LLaVA, built locally with random weights.

For tests, the docs and ``examples/hf_llava_sea.py``: the real transformers
classes (``CLIPModel``, ``SiglipModel``, ``LlavaForConditionalGeneration``) at
test sizes, saved with ``save_pretrained`` like a hub checkpoint, with a real
tokenizer: :func:`clip_bpe_tokenizer` is transformers' ``CLIPTokenizer`` over
CLIP's own BPE vocabulary, which open_clip ships (no download).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from alignkit.towers.transformers import vision_core
from alignkit.datasets.hf_image_processor import HFImageProcessor

CLIP_VOCAB = 49408  # CLIP's BPE vocabulary: 256 bytes x 2 + 48,894 merges + 2 special tokens


def clip_bpe_tokenizer(pad_token: str | None = None):
    """transformers' ``CLIPTokenizer`` over the BPE vocabulary open_clip bundles (identical token ids).

    ``pad_token='!'`` pads with id 0 as open_clip's ``SimpleTokenizer`` does;
    the default pads with ``<|endoftext|>`` as OpenAI's hub tokenizer does.
    """
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    simple = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {special.get(k, k): v for k, v in simple.encoder.items()}
    merges = sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])
    with tempfile.TemporaryDirectory() as d:
        Path(d, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        Path(d, "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for (a, b), _ in merges),
                                         encoding="utf-8")
        kwargs = {} if pad_token is None else {"pad_token": pad_token}
        return CLIPTokenizer.from_pretrained(d, **kwargs)


def tiny_clip_config(image_size: int = 32, patch_size: int = 8, width: int = 64, layers: int = 2,
                     embed_dim: int = 32, act: str = "gelu"):
    """A ``CLIPConfig`` at test size (2 layers, width 64, a 4x4 grid, C = 32) with CLIP's vocabulary."""
    from transformers import CLIPConfig

    common = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                  num_attention_heads=2, hidden_act=act)
    text = dict(common, vocab_size=CLIP_VOCAB, max_position_embeddings=77, bos_token_id=49406,
                eos_token_id=49407, pad_token_id=49407)
    vision = dict(common, image_size=image_size, patch_size=patch_size)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=embed_dim)


def tiny_siglip_config(image_size: int = 32, patch_size: int = 8, width: int = 64, layers: int = 2,
                       text_length: int = 16, act: str = "gelu"):
    """A ``SiglipConfig`` at test size (no class token, attention-pool head, C = width)."""
    from transformers import SiglipConfig

    common = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  num_attention_heads=2, hidden_act=act)
    text = dict(common, vocab_size=CLIP_VOCAB, max_position_embeddings=text_length, projection_size=width,
                pad_token_id=0, bos_token_id=49406, eos_token_id=49407)  # open_clip-style ids, padded with 0
    vision = dict(common, image_size=image_size, patch_size=patch_size)
    return SiglipConfig(text_config=text, vision_config=vision)


def _seeded(build, seed: int):
    with torch.random.fork_rng(devices=[]):  # random weights that do not depend on the caller's RNG
        torch.manual_seed(seed)
        return build().eval()


def tiny_clip(seed: int = 0, **kwargs):
    from transformers import CLIPModel

    return _seeded(lambda: CLIPModel(tiny_clip_config(**kwargs)), seed)


def tiny_siglip(seed: int = 0, **kwargs):
    from transformers import SiglipModel

    return _seeded(lambda: SiglipModel(tiny_siglip_config(**kwargs)), seed)


def save_hf_tower(model, folder: str | os.PathLike, tokenizer=None, image_processor=None) -> str:
    """``save_pretrained`` the model, its tokenizer and its PIL image processor into ``folder`` (a hub-like folder)."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    kind = model.config.model_type
    if tokenizer is None:
        tokenizer = clip_bpe_tokenizer(pad_token="!" if kind == "siglip" else None)
    tokenizer.save_pretrained(folder)
    if image_processor is None:
        image_processor = HFImageProcessor.for_tower(model).processor
    image_processor.save_pretrained(folder)
    return str(folder)


def tiny_llava(clip_model, tokenizer, text_hidden: int = 48, text_layers: int = 2, seed: int = 0,
               image_token: str = "<image>", select_strategy: str | None = None):
    """A ``LlavaForConditionalGeneration`` whose vision tower holds ``clip_model``'s vision weights.

    ``clip_model``: a ``CLIPModel`` or ``SiglipModel``. ``tokenizer`` (the
    LLM's) gets ``image_token`` added if missing; the LLM is a tiny random
    Llama, the projector LLaVA-1.5's 2-layer GELU MLP. ``select_strategy``:
    LLaVA's ``vision_feature_select_strategy``; None: ``'default'`` (drop the
    class token) for CLIP, ``'full'`` for SigLIP (no class token).
    """
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=2 * text_hidden,
                       num_hidden_layers=text_layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = clip_model.config.vision_config
    grid = vision.image_size // vision.patch_size
    if select_strategy is None:
        select_strategy = "full" if clip_model.config.model_type == "siglip" else "default"
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                         image_token_id=tokenizer.convert_tokens_to_ids(image_token),
                         vision_feature_layer=-2, vision_feature_select_strategy=select_strategy,
                         projector_hidden_act="gelu", image_seq_length=grid * grid)
    model = _seeded(lambda: LlavaForConditionalGeneration(config), seed)
    tower = model.model.vision_tower if hasattr(model, "model") else model.vision_tower
    # The transformer inside each (its place differs between transformers 4.x and 5.x).
    vision_core(tower).load_state_dict(vision_core(clip_model).state_dict())
    return model
