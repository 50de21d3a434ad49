"""What many test files share: random (visual, text) pairs, value-and-gradients, the demo config, a tiny model.

Importable as ``helpers`` from any test (``tests/`` is on ``sys.path``: pytest
puts the folder of the root ``conftest.py`` there).
"""
from __future__ import annotations

from pathlib import Path

import torch

import alignkit.testing.demo  # noqa: F401  (registers the demo CLIP config and demo_tokenizer)
from alignkit.datasets.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "projects" / "sea" / "configs" / "demo_tiny.py")


def pair(n: int, e: int, seed: int, dtype: torch.dtype = torch.float64, requires_grad: bool = False):
    """``(visual, text)``: two (N, E) N(0, 1) tensors from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn(n, e, generator=g, dtype=dtype), torch.randn(n, e, generator=g, dtype=dtype)
    return (x.requires_grad_(True), t.requires_grad_(True)) if requires_grad else (x, t)


def value_and_grads(loss, x, t):
    """``(value, grads)`` of ``loss(x, t)`` w.r.t. ``x``, ``t`` and the loss's parameters, on the CPU."""
    x, t = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
    value = loss(x, t)
    grads = torch.autograd.grad(value, [x, t, *loss.parameters()])
    return value.detach().cpu(), [g.cpu() for g in grads]


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


def tiny_batch(model, b: int = 3, text_only_row: int = 1, seed: int = 0, eos: bool = False) -> dict:
    """A ``llava_collate``-style batch of ``b`` short captions for ``model`` (64 px images); row
    ``text_only_row`` has no image (-1: every row has one); ``eos``: image rows end with the EOS token."""
    g = torch.Generator().manual_seed(seed)
    tok = model.tokenizer
    rows = []
    for i in range(b):
        ids = tok("a cat on the grass near a red car", add_special_tokens=False)["input_ids"][: 4 + i]
        end = [tok.eos_token_id] if eos else []
        rows.append(ids if i == text_only_row else [tok.bos_token_id, IMAGE_TOKEN_INDEX, *ids, *end])
    t = max(map(len, rows))
    input_ids = torch.full((b, t), tok.pad_token_id)
    attention = torch.zeros(b, t, dtype=torch.bool)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        attention[i, : len(r)] = True
    labels = input_ids.masked_fill(~attention | (input_ids == IMAGE_TOKEN_INDEX), IGNORE_INDEX)
    has_image = torch.tensor([i != text_only_row for i in range(b)])
    images = torch.randn(b, 3, 64, 64, generator=g) * has_image[:, None, None, None]
    return dict(inputs=dict(input_ids=input_ids, attention_mask=attention, labels=labels, images=images,
                            has_image=has_image), data_samples=dict(patch_labels=None))
