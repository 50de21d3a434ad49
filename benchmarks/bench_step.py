"""Benchmark one stage-1 training step with SEA's aligner against the same step without it.

Same model, same batch: a ``LLaVAModel`` with an aligner is stepped (forward,
backward, AdamW step on the adapter + temperature) with the aligner on, then
with it switched off (``model.aligner = None``, the LLaVA-1.5 step), in
alternating rounds. Prints the median time and the peak memory of each and the
ratio SEA/baseline. Never asserts. Goal (DESIGN): the aligner adds <= 5 % to a
real stage-1 step.

Modes:

- ``demo`` (default; CPU is fine): the demo's tiny CLIP (8×8 grid) and tiny
  Llama (E = 64), the embedded 41,242-word list, batch 8. At this scale the
  LLM is nearly free, so the ratio overstates the aligner's share.
- ``llava15``: LLaVA-1.5 stage-1 shapes per GPU: batch 32, CLIP ViT-L/14-336
  (random weights; P = 576, D = 1024, C = 768), V = 41,242 words, top-10,
  E = 4096 with a 2-layer stand-in LLM of Vicuna-7B's width (bf16), captions
  of 64 tokens. The stand-in makes the LLM ~16× cheaper than Vicuna-7B's 32
  layers, so the ratio is an upper bound on the aligner's share of a real step.

Peak memory: CUDA ``max_memory_allocated`` per variant; on CPU the process's
max RSS is not resettable, so none is printed.

    python benchmarks/bench_step.py                      # demo, CPU
    python benchmarks/bench_step.py --mode llava15 --device cuda
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import alignkit.testing.demo  # noqa: F401  (the demo CLIP config and tokenizer)
from alignkit.datasets.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from alignkit.labelers import default_word_list
from alignkit.registry import MODELS

SEA_ALIGNER = dict(
    type="SEAAligner",
    labeler=dict(type="CLIPTopNLabeler", word_list=None, top_n=10),
    samplers=[dict(type="SimilarityWeightedSampler"), dict(type="WindowSampler", window=2), dict(type="DedupSampler")],
    loss=dict(type="InfoNCELoss", init_logit_scale=0.0),
)


def model_cfg(mode: str, device: str, num_words: int | None = None) -> dict:
    labeler_device = dict(device=device)
    if num_words is not None:  # a smaller word list, for a quick smoke run of the llava15 shapes on a CPU

        labeler_device["word_list"] = list(default_word_list().words[:num_words])
    if mode == "demo":
        return dict(
            type="LLaVAModel",
            vision_encoder=dict(type="OpenCLIPVisionEncoder", model_name="alignkit-demo-vit", pretrained=None),
            adapter=dict(type="MLPAdapter"),
            llm=dict(pretrained=None, config=dict(model_type="llama", vocab_size=None, hidden_size=64,
                                                  intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                                  num_key_value_heads=4, max_position_embeddings=512)),
            tokenizer=dict(type="demo_tokenizer"),
            aligner=dict(SEA_ALIGNER, labeler=dict(SEA_ALIGNER["labeler"], **labeler_device)),
            trainable=["adapter", "aligner"],
        )
    import mistral_common

    # A real 32k Llama-type SentencePiece model (Mistral's ids, Vicuna's kind) for the word table.
    sp_model = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
    return dict(
        type="LLaVAModel",
        vision_encoder=dict(type="OpenCLIPVisionEncoder", model_name="ViT-L-14-336", pretrained=None),
        adapter=dict(type="MLPAdapter"),
        llm=dict(pretrained=None, dtype="bfloat16", config=dict(
            model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=2,
            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)),
        tokenizer=dict(name_or_path=sp_model),
        aligner=dict(SEA_ALIGNER, labeler=dict(SEA_ALIGNER["labeler"], **labeler_device)),
        trainable=["adapter", "aligner"],
    )


def make_batch(model, batch: int, caption: int, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    vocab = model.llm.get_input_embeddings().weight.shape[0]
    text = torch.randint(3, vocab, (batch, caption), generator=g)
    bos = torch.full((batch, 1), 1)
    input_ids = torch.cat([bos, torch.full((batch, 1), IMAGE_TOKEN_INDEX), text], 1)
    labels = torch.cat([torch.full((batch, 2), IGNORE_INDEX), text], 1)
    h, w = model.vision_encoder.image_size
    images = torch.randn(batch, 3, h, w, generator=g)
    inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids, dtype=torch.bool), labels=labels,
                  images=images, has_image=torch.ones(batch, dtype=torch.bool))
    return dict(inputs={k: v.to(device) for k, v in inputs.items()}, data_samples=dict(patch_labels=None))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step(model, optim, batch) -> float:
    out = model(**batch, mode="loss")
    loss = sum(v for k, v in out.items() if "loss" in k)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return float(loss.detach())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("demo", "llava15"), default="demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=None, help="images per step (demo 8, llava15 32)")
    p.add_argument("--caption", type=int, default=64, help="caption tokens per sample")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (demo 10, llava15 20)")
    p.add_argument("--num-words", type=int, default=None, help="first N words of the default list (smoke runs only)")
    args = p.parse_args(argv)
    batch_size = args.batch or (8 if args.mode == "demo" else 32)
    repeats = args.repeats or (10 if args.mode == "demo" else 20)

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = MODELS.build(model_cfg(args.mode, args.device, args.num_words)).to(args.device).train()
    print(f"built {args.mode} model in {time.perf_counter() - t0:.1f}s on {args.device}: "
          f"P={model.num_visual_tokens}, E={model.adapter.llm_dim}, V={len(model.aligner.words)}, batch={batch_size}")
    batch = make_batch(model, batch_size, args.caption, args.device)
    optim = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    aligner = model.aligner
    times = {"sea": [], "baseline": []}
    peaks = {"sea": [], "baseline": []}
    for r in range(repeats + 2):  # 2 warm-up rounds
        for name in ("sea", "baseline") if r % 2 == 0 else ("baseline", "sea"):
            model.aligner = aligner if name == "sea" else None
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            sync(args.device)
            t = time.perf_counter()
            step(model, optim, batch)
            sync(args.device)
            if r >= 2:
                times[name].append(time.perf_counter() - t)
                if args.device.startswith("cuda"):
                    peaks[name].append(torch.cuda.max_memory_allocated() / 2**30)
    model.aligner = aligner
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median step time: SEA {med['sea'] * 1e3:.1f} ms, baseline {med['baseline'] * 1e3:.1f} ms, "
          f"ratio {med['sea'] / med['baseline']:.3f} (aligner adds {100 * (med['sea'] / med['baseline'] - 1):+.1f} %)")
    result = dict(time=med)
    if peaks["sea"]:
        peak = {k: max(v) for k, v in peaks.items()}
        print(f"peak memory: SEA {peak['sea']:.2f} GiB, baseline {peak['baseline']:.2f} GiB, "
              f"ratio {peak['sea'] / peak['baseline']:.3f}")
        result["peak_gib"] = peak
    else:
        print("peak memory: CUDA only (CPU max RSS cannot be reset between variants)")
    return result


if __name__ == "__main__":
    main()
