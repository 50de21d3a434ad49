"""Builders for the model tests: a tiny LLaVAModel config made of the demo's pieces."""
from __future__ import annotations

import alignkit.testing.demo  # noqa: F401  (registers the demo CLIP config and demo_tokenizer)

WORDS = ["cat", "dog", "tree", "sky", "grass", "car", "road", "coffee", "cup", "rocket", "cloud", "water"]


def tiny_model_cfg(aligner: bool = True, **overrides) -> dict:
    """A LLaVAModel config with the demo's tiny CLIP (8×8 grid, D=64, C=32) and a tiny random Llama (E=48)."""
    cfg = dict(
        type="LLaVAModel",
        vision_encoder=dict(type="OpenCLIPVisionEncoder", model_name="alignkit-demo-vit", pretrained=None),
        adapter=dict(type="MLPAdapter", depth=2, act="GELU"),
        llm=dict(pretrained=None, config=dict(
            model_type="llama", vocab_size=None, hidden_size=48, intermediate_size=96, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)),
        tokenizer=dict(type="demo_tokenizer"),
        trainable=["adapter"],
    )
    if aligner:
        cfg["aligner"] = dict(
            type="SEAAligner",
            labeler=dict(type="CLIPTopNLabeler", word_list=list(WORDS), top_n=3),
            samplers=[dict(type="SimilarityWeightedSampler"), dict(type="WindowSampler", window=2),
                      dict(type="DedupSampler")],
            loss=dict(type="InfoNCELoss", init_logit_scale=0.0),
            loss_weight=1.0,
        )
        cfg["trainable"] = ["adapter", "aligner"]
    cfg.update(overrides)
    return cfg
