"""Tiny open_clip models with random weights, built locally (no hub), and small word files.

Registered here (test-only):

- open_clip config ``alignkit-tiny-vit``: a CLIP ViT (2 blocks, width 64,
  32 px, patch 8 -> 4×4 grid, class token) with a causal text tower.
- open_clip config ``alignkit-tiny-map``: a SigLIP-like tower: a timm ViT
  trunk without class token pooled by timm's ``AttentionPoolLatent``
  (``timm_pool='map'``, ``timm_proj='none'``) and a bidirectional text tower
  pooling the last position, like SigLIP's.
- ``alignkit-tiny-map-1tok``: the same at 8 px, a 1×1 grid.

Names avoid "siglip" so open_clip picks its bundled SimpleTokenizer instead of
fetching a tokenizer from the hub.
"""
from __future__ import annotations

from types import SimpleNamespace

import open_clip
import pytest
import timm
import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

TINY_VIT = "alignkit-tiny-vit"
TINY_MAP = "alignkit-tiny-map"
TINY_MAP_1TOK = "alignkit-tiny-map-1tok"

WORDS = [
    "cat", "dog", "tree", "car", "house", "river", "mountain", "bicycle", "pizza", "guitar",
    "ocean", "window", "bridge", "flower", "airplane", "keyboard", "sandwich", "umbrella", "giraffe", "lamp",
]


def _timm_vit(img_size: int):
    def build(pretrained: bool = False, **kwargs):
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        args = dict(img_size=img_size, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0,
                    class_token=False, global_pool="map")
        args.update(kwargs)
        return VisionTransformer(**args)
    return build


def _register() -> None:
    for name, size in (("alignkit_tiny_vit_map", 32), ("alignkit_tiny_vit_map_1tok", 8)):
        if name not in timm.list_models(name):
            fn = _timm_vit(size)
            fn.__name__ = name
            fn.__module__ = __name__
            register_model(fn)
    text = dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
    configs = {
        TINY_VIT: dict(
            embed_dim=32,
            vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
            text_cfg=text,
        ),
        TINY_MAP: dict(
            embed_dim=64, init_logit_bias=-10, custom_text=True,
            vision_cfg=dict(image_size=32, timm_model_name="alignkit_tiny_vit_map", timm_model_pretrained=False,
                            timm_pool="map", timm_proj="none"),
            text_cfg=dict(text, context_length=16, no_causal_mask=True, proj_bias=True, pool_type="last"),
        ),
        TINY_MAP_1TOK: dict(
            embed_dim=64, init_logit_bias=-10, custom_text=True,
            vision_cfg=dict(image_size=8, timm_model_name="alignkit_tiny_vit_map_1tok", timm_model_pretrained=False,
                            timm_pool="map", timm_proj="none"),
            text_cfg=dict(text, context_length=16, no_causal_mask=True, proj_bias=True, pool_type="last"),
        ),
    }
    open_clip.factory._MODEL_CONFIGS.update(configs)


_register()


def save_weights(name: str, path, seed: int = 0) -> str:
    """Create ``name`` with seeded random weights and save its state dict to ``path``."""
    with torch.random.fork_rng(devices=[]):  # seed without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = open_clip.create_model(name)
    torch.save(model.state_dict(), path)
    return str(path)


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) random images (already 'preprocessed')."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Names, weights files and helpers of the tiny models (``tiny.weights[name]`` is a path)."""
    root = tmp_path_factory.mktemp("weights")
    weights = {name: save_weights(name, root / f"{name}.bin") for name in (TINY_VIT, TINY_MAP, TINY_MAP_1TOK)}
    return SimpleNamespace(
        VIT=TINY_VIT, MAP=TINY_MAP, MAP_1TOK=TINY_MAP_1TOK, weights=weights, words=list(WORDS), images=images,
        save_weights=save_weights,
    )


@pytest.fixture
def word_file(tmp_path):
    """A 20-word file written for the test."""
    path = tmp_path / "words.txt"
    path.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    return str(path)
