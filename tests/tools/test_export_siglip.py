"""SigLIP towers (open_clip over a timm ViT with an attention-pool head) export to ``SiglipVisionModel``
inside ``LlavaConfig``: the mapping block by block, and a whole LLaVA whose HF logits equal alignkit's.

A tiny SigLIP-shaped tower is registered here (timm ``VisionTransformer`` without class token, ``map``
pooling, tanh-GELU as SigLIP's), random weights, nothing downloaded. Tolerance: 1e-5 per block, 1e-4 on
logits (fp32; the same math in another order).
"""
from __future__ import annotations

import open_clip
import pytest
import timm
import torch
from helpers import tiny_model_cfg
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from alignkit.datasets.templates import tokenize_with_image
from alignkit.export.hf import (
    build_llava,
    expand_image_placeholders,
    generation_prompt,
    siglip_vision_config,
    siglip_vision_state_dict,
    write_llava,
)
from alignkit.registry import MODELS

import alignkit.testing.demo  # noqa: F401,E402  (demo_tokenizer)

TOWER = "alignkit-export-map"  # no "siglip" in the name: open_clip would fetch a hub tokenizer


def _register():
    name = "alignkit_export_map_vit"
    if name not in timm.list_models(name):
        def build(pretrained=False, **kwargs):
            for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
                kwargs.pop(key, None)
            args = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=2, mlp_ratio=2.0,
                        class_token=False, global_pool="map", act_layer="gelu_tanh")
            return VisionTransformer(**dict(args, **kwargs))
        build.__name__ = name
        build.__module__ = __name__
        register_model(build)
    text = dict(context_length=16, vocab_size=49408, width=64, heads=2, layers=1, no_causal_mask=True,
                proj_bias=True, pool_type="last")
    open_clip.factory._MODEL_CONFIGS[TOWER] = dict(
        embed_dim=64, init_logit_bias=-10, custom_text=True, text_cfg=text,
        vision_cfg=dict(image_size=32, timm_model_name=name, timm_model_pretrained=False, timm_pool="map",
                        timm_proj="none"))


_register()


def test_siglip_mapping_equals_timm_at_every_block_and_the_pooled_output():
    from transformers import SiglipVisionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        visual = open_clip.create_model(TOWER, pretrained=None).visual.eval()
    cfg = siglip_vision_config(visual)
    assert cfg.hidden_act == "gelu_pytorch_tanh" and cfg.num_hidden_layers == 3 and cfg.image_size == 32
    hf = SiglipVisionModel(cfg).eval()
    state = siglip_vision_state_dict(visual)
    own = {k.removeprefix("vision_model."): v for k, v in hf.state_dict().items()}  # 4.x keeps the prefix
    assert sorted(own) == sorted(state)  # every weight mapped, none left over
    hf.load_state_dict({k if k in hf.state_dict() else f"vision_model.{k}": v for k, v in state.items()}, strict=True)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    trunk = visual.trunk
    with torch.no_grad():
        blocks = trunk.forward_intermediates(images, indices=[0, 1, 2], intermediates_only=True, output_fmt="NLC",
                                             norm=False)
        out = hf(pixel_values=images, output_hidden_states=True)
        pooled = trunk.forward_head(trunk.forward_features(images))  # norm -> attention pool
    for b in range(3):
        torch.testing.assert_close(out.hidden_states[b + 1], blocks[b], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooler_output, pooled, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def siglip_llava():
    cfg = tiny_model_cfg(aligner=False,  # tests/helpers' tiny model with the SigLIP tower
                         vision_encoder=dict(type="OpenCLIPVisionEncoder", model_name=TOWER, pretrained=None))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = MODELS.build(cfg).eval()
    model.autocast_dtype = None
    return model


def test_siglip_llava_export_gives_alignkit_logits(siglip_llava, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from alignkit.datasets.image_processor import OpenCLIPImageProcessor

    model = siglip_llava
    proc = OpenCLIPImageProcessor(model_name=TOWER)
    exported = build_llava(model, proc, "vicuna_v1", dtype=torch.float32)
    assert exported.config["vision_config"]["model_type"] == "siglip_vision_model"
    assert exported.config["vision_feature_select_strategy"] == "full"
    assert exported.processor["num_additional_image_tokens"] == 0
    write_llava(exported, tmp_path)
    hf = LlavaForConditionalGeneration.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    prompt = generation_prompt("vicuna_v1", "What is this?") + " A"
    ids = torch.tensor([tokenize_with_image(model.tokenizer, prompt, True)])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    p = model.num_visual_tokens
    assert p == 16  # 4 x 4 patches, no prefix token
    with torch.no_grad():
        ours = model({"input_ids": ids, "images": pixels}, mode="tensor")
        theirs = hf(input_ids=expand_image_placeholders(ids[0], exported.image_token_id, p)[None],
                    pixel_values=pixels).logits
    torch.testing.assert_close(theirs[..., : ours.shape[-1]], ours, atol=1e-4, rtol=0)
