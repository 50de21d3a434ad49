"""One SEA alignment step in plain PyTorch: no mmengine Runner, no config.

This is use 3 of docs/design.md: import the pieces into your own MLLM code. It runs
on a CPU in seconds with tiny, locally built stand-ins for the parts that would
be large in real training (the vision features, the LLM's embedding matrix and
tokenizer); every alignkit piece used here is the real one.

    python examples/sea_step_plain_pytorch.py

What one step does (paper §3, Eq. 7-11):
  1. patch labels (random here; a labeler or a label cache in real training),
  2. one label per patch by similarity, one patch per 2x2 window, one pair per word,
  3. gather the sampled visual tokens (adapter outputs) and their words' LLM embeddings,
  4. symmetric InfoNCE between them; backprop into the adapter and the temperature.
"""
from __future__ import annotations

import argparse

import torch

from alignkit import PairSet, PatchLabels
from alignkit.adapters import MLPAdapter
from alignkit.losses import InfoNCELoss
from alignkit.samplers import Compose, DedupSampler, SimilarityWeightedSampler, WindowSampler
from alignkit.testing import byte_level_bpe_tokenizer
from alignkit.word_table import build_word_table

WORDS = ["cat", "dog", "tree", "sky", "grass", "car", "road", "person", "face", "hat",
         "coffee", "cup", "rocket", "cloud", "water", "table", "window", "door", "light", "shadow"]


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--grid", type=int, default=6, help="patch grid side (24 for CLIP-L/336)")
    p.add_argument("--top-n", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    g = torch.Generator().manual_seed(args.seed)
    B, H, W, K, V = args.batch, args.grid, args.grid, args.top_n, len(WORDS)
    P, D, E = H * W, 32, 48  # vision width D, LLM width E

    # The LLM side: a real (tiny) Hugging Face tokenizer and an input-embedding layer.
    tokenizer = byte_level_bpe_tokenizer()  # knows a few words whole; others split
    embedding = torch.nn.Embedding(len(tokenizer), E)
    words = build_word_table(tokenizer, embedding, WORDS)  # (V, E), built once (Eq. 8)

    # The vision side: layer -2 patch features (B, P, D) and patch labels.
    features = torch.randn(B, P, D, generator=g)
    scores, order = torch.rand(B, P, V, generator=g).sort(dim=-1, descending=True)
    labels = PatchLabels(words=order[..., :K], scores=scores[..., :K], grid=(H, W))

    adapter = MLPAdapter(vision_dim=D, llm_dim=E)  # LLaVA-1.5's mlp2x_gelu
    loss_fn = InfoNCELoss()  # learnable temperature, tau_0 = 1 (the paper's preset)
    sampler = Compose([SimilarityWeightedSampler(), WindowSampler(window=2), DedupSampler()])
    optim = torch.optim.AdamW([*adapter.parameters(), *loss_fn.parameters()], lr=1e-2)

    for step in range(args.steps):
        visual = adapter(features)  # (B, P, D) -> (B, P, E)
        candidates = PairSet.from_labels(labels)  # every (image, patch, word) slot
        pairs = sampler(candidates, labels.grid, g)  # (N,) sampled pairs
        x = visual[pairs.batch, pairs.patch]  # (N, E) visual tokens
        t = words.table[pairs.word]  # (N, E) label embeddings
        loss = loss_fn(x, t)
        tau = loss_fn.temperature  # the value this step used
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step == 0 or step == args.steps - 1:
            print(f"step {step:3d}: {len(candidates)} candidates -> {len(pairs)} pairs, "
                  f"loss_align {loss.item():.4f}, temperature {tau:.3f}")
    return loss.item()


if __name__ == "__main__":
    main()
