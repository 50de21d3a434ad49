"""The transformers tower backend equals the open_clip one on the same weights.

The tiny open_clip CLIP ViT and SigLIP-like models of ``conftest.py`` are
converted to transformers' ``CLIPModel`` / ``SiglipModel`` by the key mapping
written out below (an independent reference of how the two libraries name the
same tensors), saved with ``save_pretrained`` and loaded back the way a user's
hub checkpoint is. Both backends must then give the same dense embeddings,
the same top-n word ids and scores (<= 1e-5) and the same adapter features
(LLaVA's ``hidden_states[-2][:, 1:]`` for CLIP, all tokens for SigLIP).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import open_clip
import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextModelWithProjection,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    LlamaConfig,
    LlamaForCausalLM,
    SiglipConfig,
    SiglipModel,
)

from alignkit.labelers import CLIPTopNLabeler, HFCLIPTopNLabeler, HFSigLIPTopNLabeler, SigLIPTopNLabeler
from alignkit.towers.open_clip import forward_features as open_clip_forward
from alignkit.registry import LABELERS
from alignkit.testing.hf_tiny import clip_bpe_tokenizer, save_hf_tower
from alignkit.towers import transformers as hf_tower

TOL = dict(atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- the key mapping (reference)
def _attention_block(sd: dict, src: str, dst: str, qkv: str, out: str, ln1: str, ln2: str, fc1: str, fc2: str):
    """One pre-norm transformer block: fused qkv (3D, D) -> q_proj / k_proj / v_proj."""
    # open_clip's nn.MultiheadAttention names them in_proj_weight / in_proj_bias, timm's Linear qkv.weight / .bias
    fused = "in_proj_{}" if qkv == "attn.in_proj" else "qkv.{}"
    w, b = sd[f"{src}.attn.{fused.format('weight')}"], sd[f"{src}.attn.{fused.format('bias')}"]
    out_sd = {}
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        out_sd[f"{dst}.self_attn.{name}.weight"] = w.chunk(3)[i]
        out_sd[f"{dst}.self_attn.{name}.bias"] = b.chunk(3)[i]
    for a, c in ((out, "self_attn.out_proj"), (ln1, "layer_norm1"), (ln2, "layer_norm2"), (fc1, "mlp.fc1"),
                 (fc2, "mlp.fc2")):
        out_sd[f"{dst}.{c}.weight"] = sd[f"{src}.{a}.weight"]
        out_sd[f"{dst}.{c}.bias"] = sd[f"{src}.{a}.bias"]
    return out_sd


def _text_tower(sd: dict, prefix: str, layers: int) -> dict:
    """open_clip text transformer (``token_embedding`` ... ``ln_final``) -> ``text_model.*``."""
    out = {
        "text_model.embeddings.token_embedding.weight": sd[f"{prefix}token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd[f"{prefix}positional_embedding"],
        "text_model.final_layer_norm.weight": sd[f"{prefix}ln_final.weight"],
        "text_model.final_layer_norm.bias": sd[f"{prefix}ln_final.bias"],
    }
    for i in range(layers):
        out.update(_attention_block(sd, f"{prefix}transformer.resblocks.{i}", f"text_model.encoder.layers.{i}",
                                    "attn.in_proj", "attn.out_proj", "ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj"))
    return out


def open_clip_vit_to_hf(sd: dict, layers: int) -> dict:
    """open_clip CLIP (``visual.*`` ViT + causal text tower) -> transformers ``CLIPModel``."""
    v = "vision_model"
    out = {
        f"{v}.embeddings.class_embedding": sd["visual.class_embedding"],
        f"{v}.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        f"{v}.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        f"{v}.pre_layrnorm.weight": sd["visual.ln_pre.weight"],  # sic: transformers' spelling
        f"{v}.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        f"{v}.post_layernorm.weight": sd["visual.ln_post.weight"],
        f"{v}.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].t(),  # open_clip: x @ proj (D, C); Linear: x @ W.T
        "text_projection.weight": sd["text_projection"].t(),
        "logit_scale": sd["logit_scale"],
    }
    for i in range(layers):
        out.update(_attention_block(sd, f"visual.transformer.resblocks.{i}", f"{v}.encoder.layers.{i}",
                                    "attn.in_proj", "attn.out_proj", "ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj"))
    out.update(_text_tower(sd, "", layers))
    return out


def open_clip_map_to_hf(sd: dict, layers: int) -> dict:
    """open_clip SigLIP-like (timm trunk + ``AttentionPoolLatent``, bidirectional text) -> ``SiglipModel``."""
    v, t = "vision_model", "visual.trunk"
    pool = f"{t}.attn_pool"
    out = {
        f"{v}.embeddings.patch_embedding.weight": sd[f"{t}.patch_embed.proj.weight"],
        f"{v}.embeddings.patch_embedding.bias": sd[f"{t}.patch_embed.proj.bias"],
        f"{v}.embeddings.position_embedding.weight": sd[f"{t}.pos_embed"][0],  # (1, P, D) -> (P, D)
        f"{v}.post_layernorm.weight": sd[f"{t}.norm.weight"],
        f"{v}.post_layernorm.bias": sd[f"{t}.norm.bias"],
        f"{v}.head.probe": sd[f"{pool}.latent"],
        # timm splits the pool's projections into q (D) and kv (2D); MultiheadAttention packs [q | k | v].
        f"{v}.head.attention.in_proj_weight": torch.cat([sd[f"{pool}.q.weight"], sd[f"{pool}.kv.weight"]]),
        f"{v}.head.attention.in_proj_bias": torch.cat([sd[f"{pool}.q.bias"], sd[f"{pool}.kv.bias"]]),
        f"{v}.head.attention.out_proj.weight": sd[f"{pool}.proj.weight"],
        f"{v}.head.attention.out_proj.bias": sd[f"{pool}.proj.bias"],
        f"{v}.head.layernorm.weight": sd[f"{pool}.norm.weight"],
        f"{v}.head.layernorm.bias": sd[f"{pool}.norm.bias"],
        f"{v}.head.mlp.fc1.weight": sd[f"{pool}.mlp.fc1.weight"],
        f"{v}.head.mlp.fc1.bias": sd[f"{pool}.mlp.fc1.bias"],
        f"{v}.head.mlp.fc2.weight": sd[f"{pool}.mlp.fc2.weight"],
        f"{v}.head.mlp.fc2.bias": sd[f"{pool}.mlp.fc2.bias"],
        "text_model.head.weight": sd["text.text_projection.weight"],
        "text_model.head.bias": sd["text.text_projection.bias"],
        "logit_scale": sd["logit_scale"].reshape(1),
        "logit_bias": sd["logit_bias"].reshape(1),
    }
    for i in range(layers):
        out.update(_attention_block(sd, f"{t}.blocks.{i}", f"{v}.encoder.layers.{i}",
                                    "attn.qkv", "attn.proj", "norm1", "norm2", "mlp.fc1", "mlp.fc2"))
    out.update(_text_tower(sd, "text.", layers))
    return out


def _load_exact(model, sd: dict):
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # position_ids are non-weight buffers transformers creates itself
    assert not unexpected and not [k for k in missing if not k.endswith("position_ids")], (missing, unexpected)
    return model.eval()


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pair(tiny, tmp_path_factory):
    """Each tiny open_clip model next to its transformers conversion, saved as a hub-like folder."""
    root = tmp_path_factory.mktemp("hf")
    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu")
    vit = open_clip.create_model(tiny.VIT, pretrained=tiny.weights[tiny.VIT]).eval()
    clip_cfg = CLIPConfig(
        text_config=dict(common, intermediate_size=256, vocab_size=49408, max_position_embeddings=77,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(common, intermediate_size=256, image_size=32, patch_size=8),
        projection_dim=32,
    )
    clip = _load_exact(CLIPModel(clip_cfg), open_clip_vit_to_hf(vit.state_dict(), 2))
    smap = open_clip.create_model(tiny.MAP, pretrained=tiny.weights[tiny.MAP]).eval()
    sig_cfg = SiglipConfig(
        # open_clip's text tower: LayerNorm eps 1e-5, MLP ratio 4; the timm trunk: eps 1e-6, MLP ratio 2
        text_config=dict(common, intermediate_size=256, vocab_size=49408, max_position_embeddings=16,
                         projection_size=64, layer_norm_eps=1e-5, pad_token_id=0, bos_token_id=49406,
                         eos_token_id=49407),
        vision_config=dict(common, intermediate_size=128, image_size=32, patch_size=8, layer_norm_eps=1e-6),
    )
    siglip = _load_exact(SiglipModel(sig_cfg), open_clip_map_to_hf(smap.state_dict(), 2))
    # open_clip's SimpleTokenizer pads with id 0 ('!'); SigLIP pools the last (padded) position, so pad alike.
    clip_dir = save_hf_tower(clip, root / "clip", tokenizer=clip_bpe_tokenizer())
    sig_dir = save_hf_tower(siglip, root / "siglip", tokenizer=clip_bpe_tokenizer(pad_token="!"))
    return dict(vit=vit, clip=clip, clip_dir=clip_dir, map=smap, siglip=siglip, sig_dir=sig_dir, root=root)


def test_the_hf_tokenizer_gives_open_clips_token_ids(tiny):
    simple = open_clip.get_tokenizer(tiny.MAP)  # context 16, pads with 0
    ids = clip_bpe_tokenizer(pad_token="!")(tiny.words, padding="max_length", max_length=16, return_tensors="pt")
    assert torch.equal(ids["input_ids"], simple(tiny.words))


# --------------------------------------------------------------------------- equivalence
def test_clip_dense_and_adapter_features_equal_open_clip(pair, tiny):
    images = tiny.images(3, 32)
    with torch.no_grad():
        ref_feats, ref_dense = open_clip_forward(pair["vit"].visual, images, (-2, 0))
        feats, dense = hf_tower.forward_features(pair["clip"], images, (-2, 0))
        # LLaVA's CLIPVisionTower.feature_select, written out: hidden_states[select_layer][:, 1:]
        llava = pair["clip"].vision_model(pixel_values=images, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert dense.shape == ref_dense.shape == (3, 16, 32)
    torch.testing.assert_close(dense, ref_dense, **TOL)
    torch.testing.assert_close(feats[-2], ref_feats[-2], **TOL)
    torch.testing.assert_close(feats[0], ref_feats[0], **TOL)
    assert torch.equal(feats[-2], llava)


def test_siglip_dense_and_adapter_features_equal_open_clip(pair, tiny):
    images = tiny.images(2, 32, seed=1)
    with torch.no_grad():
        ref_feats, ref_dense = open_clip_forward(pair["map"].visual, images, (-2,))
        feats, dense = hf_tower.forward_features(pair["siglip"], images, (-2,))
        all_tokens = pair["siglip"].vision_model(pixel_values=images, output_hidden_states=True).hidden_states[-2]
    assert dense.shape == ref_dense.shape == (2, 16, 64)
    torch.testing.assert_close(dense, ref_dense, **TOL)
    torch.testing.assert_close(feats[-2], ref_feats[-2], **TOL)
    assert torch.equal(feats[-2], all_tokens)  # SigLIP has no class token: nothing is dropped


def test_siglip_one_token_dense_is_get_image_features():
    from alignkit.testing.hf_tiny import tiny_siglip

    model = tiny_siglip(seed=2, image_size=8).double()
    images = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        _, dense = hf_tower.forward_features(model, images, ())
        image_embeds = model.vision_model(pixel_values=images).pooler_output
    torch.testing.assert_close(dense[:, 0], image_embeds, atol=1e-12, rtol=0)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_labelers_give_equal_banks_ids_and_scores(pair, tiny, tmp_path, family):
    words = tiny.words
    if family == "clip":
        ref = CLIPTopNLabeler(tiny.VIT, tiny.weights[tiny.VIT], word_list=words, top_n=5, min_score=float("-inf"),
                              cache_dir=tmp_path, device="cpu")
        hf = LABELERS.build(dict(type="HFCLIPTopNLabeler", model_name=pair["clip_dir"], word_list=words, top_n=5,
                                 min_score=float("-inf"), cache_dir=str(tmp_path), device="cpu"))
    else:
        ref = SigLIPTopNLabeler(tiny.MAP, tiny.weights[tiny.MAP], word_list=words, top_n=5,
                                min_score=float("-inf"), cache_dir=tmp_path, device="cpu")
        hf = LABELERS.build(dict(type="HFSigLIPTopNLabeler", model_name=pair["sig_dir"], word_list=words, top_n=5,
                                 min_score=float("-inf"), cache_dir=str(tmp_path), device="cpu"))
    assert isinstance(hf, HFCLIPTopNLabeler if family == "clip" else HFSigLIPTopNLabeler)
    torch.testing.assert_close(hf.bank, ref.bank, **TOL)
    assert hf.grid == ref.grid == (4, 4) and hf.negate == ref.negate
    images = tiny.images(4, 32, seed=3)
    a, b = ref(images), hf(images)
    assert torch.equal(a.words, b.words)
    torch.testing.assert_close(b.scores, a.scores, **TOL)
    # The fingerprints name their backends, so a cache of one is never read with the other.
    assert hf.fingerprint()["backend"] == "transformers" and hf.fingerprint() != ref.fingerprint()


# --------------------------------------------------------------------------- bad input: named at construction
def test_a_model_that_is_not_a_clip_or_siglip_vlm_is_named(tmp_path, tiny):
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2))
    llama.save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match=r"'llama' model, not a CLIP/SigLIP vision-language model"):
        HFCLIPTopNLabeler(str(tmp_path / "llama"), word_list=tiny.words, cache_dir=str(tmp_path))


def test_a_tower_without_its_projection_is_named(pair, tmp_path, tiny):
    vision = CLIPVisionModel(pair["clip"].config.vision_config)
    vision.save_pretrained(tmp_path / "vision")
    with pytest.raises(ValueError, match=r"no visual_projection weights"):
        HFCLIPTopNLabeler(str(tmp_path / "vision"), text_model_name=pair["clip_dir"], word_list=tiny.words,
                          cache_dir=str(tmp_path))
    # In memory: a bare CLIPVisionModel has no projection for dense_mode='proj'.
    with pytest.raises(ValueError, match=r"needs the tower's visual_projection"):
        hf_tower.forward_features(vision, tiny.images(1, 32))


def test_a_text_model_of_another_width_is_named(pair, tmp_path, tiny):
    cfg = pair["clip"].config
    vision = CLIPVisionModelWithProjection(type(cfg.vision_config)(**{**cfg.vision_config.to_dict(),
                                                                     "projection_dim": 32}))
    vision.save_pretrained(tmp_path / "vision")
    shutil.copy(Path(pair["clip_dir"]) / "preprocessor_config.json", tmp_path / "vision")
    text = CLIPTextModelWithProjection(type(cfg.text_config)(**{**cfg.text_config.to_dict(), "projection_dim": 16}))
    text.save_pretrained(tmp_path / "text")
    clip_bpe_tokenizer().save_pretrained(tmp_path / "text")
    with pytest.raises(ValueError, match=r"text model's output width 16 differs from the tower's joint-space width C=32"):
        HFCLIPTopNLabeler(str(tmp_path / "vision"), text_model_name=str(tmp_path / "text"), word_list=tiny.words,
                          cache_dir=str(tmp_path))


def test_a_processor_of_another_size_is_named(pair, tmp_path, tiny):
    folder = tmp_path / "clip"
    shutil.copytree(pair["clip_dir"], folder)
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    cfg["crop_size"] = {"height": 24, "width": 24}
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"produces 24x24 images but the tower expects 32x32"):
        HFCLIPTopNLabeler(str(folder), word_list=tiny.words, cache_dir=str(tmp_path))
