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
    python benchmarks/bench_step.py --vs-transformers    # + the baseline step vs transformers' LLaVA

``--vs-transformers``: the baseline step (no aligner) against transformers'
``LlavaForConditionalGeneration`` built at the same shapes (its CLIP vision
tower, projector and Llama; random weights), same batch, same precision, in
alternating rounds (goal: ratio <= 1.00, alignkit adds nothing).
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
from alignkit.models.zero3 import full_shape
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
    vocab = full_shape(model.llm.get_input_embeddings().weight)[0]  # also under ZeRO-3
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


# CLIP ViT-L/14-336 as transformers' CLIPVisionConfig, and the demo ViT ('alignkit-demo-vit') likewise.
HF_CLIP_L336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
HF_DEMO_VIT = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                   image_size=64, patch_size=8, projection_dim=32, hidden_act="gelu")


def alternate(fns: dict, rounds: int, device: str) -> dict:
    """Median seconds of each callable, run in alternating order each round after one warm-up round."""
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds + 1):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            t = time.perf_counter()
            fns[name]()
            sync(device)
            if r:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def hf_llava(hf_tower: dict, llm: dict, device: str, vocab: int, llm_dtype):
    """transformers' LlavaForConditionalGeneration at the same shapes: tower fp32, projector fp32, LLM in llm_dtype."""
    from transformers import AutoConfig, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    text = dict(llm, vocab_size=vocab + 1)  # + the <image> token
    model_type = text.pop("model_type")
    config = LlavaConfig(vision_config=CLIPVisionConfig(**hf_tower),
                         text_config=AutoConfig.for_model(model_type, **text), image_token_index=vocab,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    with torch.device(device):
        model = LlavaForConditionalGeneration(config)
    model.model.language_model.to(llm_dtype)
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    return model.train()


def compare_with_transformers(ours, hf_tower: dict, llm: dict, batch_size: int, caption: int, rounds: int,
                              device: str) -> dict:
    """Step time of ``ours`` (a LLaVAModel without aligner) against transformers' LLaVA at the same shapes."""
    ours_optim = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-5)
    batch = make_batch(ours, batch_size, caption, device)
    vocab = ours.llm.get_input_embeddings().weight.shape[0]
    llm_dtype = next(ours.llm.parameters()).dtype
    theirs = hf_llava(hf_tower, llm, device, vocab, llm_dtype)
    theirs_optim = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=1e-5)
    # The same rows for transformers: the placeholder expanded to P image tokens (its input format).
    p = ours.num_visual_tokens
    inputs = batch["inputs"]
    ids, labels = inputs["input_ids"], inputs["labels"]
    img = ids == IMAGE_TOKEN_INDEX
    rep = torch.where(img, p, 1).flatten()
    hf_ids = torch.repeat_interleave(ids.masked_fill(img, vocab).flatten(), rep).view(ids.shape[0], -1)
    hf_labels = torch.repeat_interleave(labels.flatten(), rep).view(ids.shape[0], -1)

    def theirs_step():
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            out = theirs(input_ids=hf_ids, pixel_values=inputs["images"], labels=hf_labels, use_cache=False)
        theirs_optim.zero_grad(set_to_none=True)
        out.loss.float().backward()
        theirs_optim.step()

    med = alternate({"alignkit": lambda: step(ours, ours_optim, batch), "transformers": theirs_step},
                    rounds, device)
    return dict(batch=batch_size, alignkit_ms=1e3 * med["alignkit"], transformers_ms=1e3 * med["transformers"],
                ratio=med["alignkit"] / med["transformers"])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("demo", "llava15"), default="demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=None, help="images per step (demo 8, llava15 32)")
    p.add_argument("--caption", type=int, default=64, help="caption tokens per sample")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (demo 10, llava15 20)")
    p.add_argument("--num-words", type=int, default=None, help="first N words of the default list (smoke runs only)")
    p.add_argument("--vs-transformers", action="store_true",
                   help="also time the baseline step against transformers' LlavaForConditionalGeneration")
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
    if args.vs_transformers:
        model.aligner = None  # the LLaVA-1.5 step, against transformers' own implementation of it
        llm = model_cfg(args.mode, args.device, args.num_words)["llm"]["config"]
        vs = compare_with_transformers(model, HF_DEMO_VIT if args.mode == "demo" else HF_CLIP_L336, llm, batch_size,
                                       args.caption, repeats, args.device)
        model.aligner = aligner
        print(f"baseline step vs transformers' LlavaForConditionalGeneration: alignkit {vs['alignkit_ms']:.1f} ms, "
              f"transformers {vs['transformers_ms']:.1f} ms, ratio {vs['ratio']:.3f}")
        result["vs_transformers"] = vs
    return result


if __name__ == "__main__":
    main()
