"""The GPU suite: one command, one H200, under 8 minutes, no downloads; one JSON and one markdown table.

Random weights at the real shapes (nothing is downloaded; the word table uses
a real 32k Llama-type SentencePiece model that ``mistral_common`` ships):

1. ``aligner_share``: the aligner's share of a stage-1 step at LLaVA-1.5 shapes
   — CLIP ViT-L/14-336 + a 32-layer Vicuna-7B-shaped LLM in bf16, per-GPU
   batch 32 (halved until it fits; the batch used is reported), 41,242 words,
   top-10. SEA and the baseline (the same model with ``aligner=None``) step in
   alternating rounds; median of each and the ratio. Goal: ≤ 1.02.
2. ``labeler``: the labeler end to end (tower + top-n, bf16 tower, bf16
   search) in images/s, and the projected time to label all 558,128
   LLaVA-Pretrain images on one GPU. Goal: ≤ 15 min.
3. ``vs_transformers``: alignkit's LLaVA-1.5 baseline step against
   transformers' own ``LlavaForConditionalGeneration`` at the same shapes,
   batch and precision (towers fp32 and LLM bf16 under bf16 autocast,
   projector trains). Goal: ratio ≤ 1.00.
4. ``zero3_stage2``: one ZeRO-3 stage-2 step (adapter + LLM train, AdamW,
   gradient checkpointing) at the 7B shape on one GPU, with its peak memory,
   when deepspeed is installed; the LLM is built partitioned (``from_config``
   under ``HfDeepSpeedConfig``).

Never asserts on time. ``--dry-run`` runs all four at tiny shapes on the CPU
in seconds (CI runs it so the suite cannot rot); its numbers mean nothing.

    python benchmarks/gpu_suite.py --out work_dirs/gpu_suite           # one GPU
    python benchmarks/gpu_suite.py --dry-run --out /tmp/gpu_suite       # CPU, tiny shapes
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import (  # noqa: E402
    HF_CLIP_L336, HF_DEMO_VIT, SEA_ALIGNER, alternate, compare_with_transformers, make_batch, step, sync,
)

from alignkit.registry import MODELS  # noqa: E402

LLAVA_PRETRAIN_IMAGES = 558_128
VICUNA7B = dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
TINY_LLM = dict(model_type="llama", vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)

FULL = dict(tower="ViT-L-14-336", hf_tower=HF_CLIP_L336, llm=VICUNA7B, batch=32, caption=64, num_words=None,
            rounds=8, labeler_images=4096, labeler_batch=256, zero_batch=4, zero_seq=2048, zero_steps=3)
DRY = dict(tower="alignkit-demo-vit", hf_tower=HF_DEMO_VIT, llm=TINY_LLM, batch=4, caption=16, num_words=500,
           rounds=2, labeler_images=16, labeler_batch=8, zero_batch=2, zero_seq=96, zero_steps=2)


def _tokenizer(shapes: dict):
    if shapes is DRY:
        return dict(type="demo_tokenizer")
    import mistral_common

    # A real 32k Llama-type SentencePiece model (Mistral's ids, Vicuna's kind) for the word table.
    return dict(name_or_path=os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1"))


def _words(shapes: dict):
    if shapes["num_words"] is None:
        return None  # the embedded 41,242-word list
    from alignkit.labelers import default_word_list

    return list(default_word_list().words[: shapes["num_words"]])


def model_cfg(shapes: dict, device: str, aligner: bool, stage2: bool = False) -> dict:
    on_gpu = device.startswith("cuda")
    cfg = dict(
        type="LLaVAModel",
        vision_encoder=dict(type="OpenCLIPVisionEncoder", model_name=shapes["tower"], pretrained=None),
        adapter=dict(type="MLPAdapter"),
        llm=dict(pretrained=None, dtype="bfloat16" if on_gpu else None, config=dict(shapes["llm"])),
        tokenizer=_tokenizer(shapes),
        trainable=["adapter", "llm"] if stage2 else (["adapter", "aligner"] if aligner else ["adapter"]),
        gradient_checkpointing=stage2,
    )
    if aligner:
        cfg["aligner"] = dict(SEA_ALIGNER, labeler=dict(SEA_ALIGNER["labeler"], device=device,
                                                        word_list=_words(shapes)))
    return cfg


def _build(cfg: dict, device: str):
    # Random weights created on the device itself: initialising 7B parameters on the CPU takes minutes.
    with torch.device(device):
        return MODELS.build(cfg).to(device).train()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------- 1. the aligner's share of a stage-1 step


def aligner_share(shapes: dict, device: str) -> dict:
    model = _build(model_cfg(shapes, device, aligner=True), device)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    aligner = model.aligner
    batch_size = shapes["batch"]
    while True:
        try:
            batch = make_batch(model, batch_size, shapes["caption"], device)

            def run(name):
                model.aligner = aligner if name == "sea" else None
                step(model, optim, batch)

            _reset_peak(device)
            med = alternate({"sea": lambda: run("sea"), "baseline": lambda: run("baseline")}, shapes["rounds"], device)
            break
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size //= 2
            optim.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    model.aligner = aligner
    result = dict(batch=batch_size, sea_ms=1e3 * med["sea"], baseline_ms=1e3 * med["baseline"],
                  ratio=med["sea"] / med["baseline"], peak_gib=_peak_gib(device), goal="ratio <= 1.02")
    del model, optim
    return result


# ---------------------------------------------------------------- 2. the labeler end to end


def labeler_throughput(shapes: dict, device: str) -> dict:
    from alignkit.registry import LABELERS

    on_gpu = device.startswith("cuda")
    labeler = LABELERS.build(dict(type="CLIPTopNLabeler", model_name=shapes["tower"], pretrained=None,
                                  word_list=_words(shapes), top_n=10, device=device,
                                  precision="bf16" if on_gpu else "fp32"))
    h, w = labeler.image_size
    n, b = shapes["labeler_images"], shapes["labeler_batch"]
    images = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        labeler(images)  # warm-up
        sync(device)
        t = time.perf_counter()
        for _ in range(max(1, n // b)):
            labeler(images)
        sync(device)
    per_s = max(1, n // b) * b / (time.perf_counter() - t)
    return dict(images_per_s=per_s, batch=b, projected_min_558k=LLAVA_PRETRAIN_IMAGES / per_s / 60,
                words=labeler.num_words, goal="projected_min_558k <= 15")


# ---------------------------------------------------------------- 3. alignkit vs transformers' LLaVA


def vs_transformers(shapes: dict, device: str, batch_size: int) -> dict:
    ours = _build(model_cfg(shapes, device, aligner=False), device)
    result = compare_with_transformers(ours, shapes["hf_tower"], shapes["llm"], batch_size, shapes["caption"],
                                       shapes["rounds"], device)
    return dict(result, goal="ratio <= 1.00")


# ---------------------------------------------------------------- 4. one ZeRO-3 stage-2 step


def zero3_stage2(shapes: dict, device: str) -> dict:
    try:
        import deepspeed
        from transformers.integrations import HfDeepSpeedConfig, unset_hf_deepspeed_config
    except ImportError as err:
        return dict(skipped=f"deepspeed not installed ({err})")
    import torch.distributed as dist

    on_gpu = device.startswith("cuda")
    if not dist.is_initialized():
        for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT="29671", RANK="0", LOCAL_RANK="0",
                               WORLD_SIZE="1").items():
            os.environ.setdefault(key, value)
        dist.init_process_group("nccl" if on_gpu else "gloo", rank=0, world_size=1)
    config = dict(train_micro_batch_size_per_gpu=shapes["zero_batch"], gradient_accumulation_steps=1,
                  gradient_clipping=1.0, zero_optimization=dict(stage=3), bf16=dict(enabled=on_gpu),
                  steps_per_print=10**9)
    keep = HfDeepSpeedConfig(config)  # transformers builds the LLM partitioned while this object lives
    try:
        _reset_peak(device)
        cfg = model_cfg(shapes, device, aligner=False, stage2=True)
        with torch.device(device):
            model = MODELS.build(cfg)
        optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5, weight_decay=0.0)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optim, config=config)
        built_gib = _peak_gib(device)
        seq = shapes["zero_seq"] - model.num_visual_tokens  # text tokens, so a row is zero_seq long
        batch = make_batch(model, shapes["zero_batch"], max(1, seq - 2), device)
        times = []
        for _ in range(shapes["zero_steps"]):
            sync(device)
            t = time.perf_counter()
            out = engine(**batch, mode="loss")
            engine.backward(out["loss_lm"])
            engine.step()
            sync(device)
            times.append(time.perf_counter() - t)
        params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
        return dict(batch=shapes["zero_batch"], seq=shapes["zero_seq"], params=params,
                    step_s=statistics.median(times[1:] or times), peak_gib=_peak_gib(device),
                    after_initialize_gib=built_gib)
    except torch.OutOfMemoryError as err:
        return dict(batch=shapes["zero_batch"], seq=shapes["zero_seq"], oom=str(err).splitlines()[0])
    finally:
        unset_hf_deepspeed_config()
        del keep


# ---------------------------------------------------------------- report


def markdown(results: dict) -> str:
    a, lab, hf, z = (results.get(k, {}) for k in ("aligner_share", "labeler", "vs_transformers", "zero3_stage2"))
    gib = lambda v: "-" if v is None else f"{v:.1f} GiB"  # noqa: E731
    rows = [
        "| measurement | result | goal |",
        "| --- | --- | --- |",
        f"| aligner's share of a stage-1 step (batch {a.get('batch')}) | SEA {a.get('sea_ms', 0):.1f} ms vs baseline "
        f"{a.get('baseline_ms', 0):.1f} ms: ratio {a.get('ratio', 0):.3f}, peak {gib(a.get('peak_gib'))} | ≤ 1.02 |",
        f"| labeler end to end ({lab.get('words')} words) | {lab.get('images_per_s', 0):.0f} images/s: "
        f"{lab.get('projected_min_558k', 0):.1f} min for 558,128 images | ≤ 15 min |",
        f"| alignkit vs transformers LLaVA step (batch {hf.get('batch')}) | {hf.get('alignkit_ms', 0):.1f} ms vs "
        f"{hf.get('transformers_ms', 0):.1f} ms: ratio {hf.get('ratio', 0):.3f} | ≤ 1.00 |",
    ]
    if "skipped" in z:
        rows.append(f"| ZeRO-3 stage-2 step | skipped: {z['skipped']} | |")
    elif "oom" in z:
        rows.append(f"| ZeRO-3 stage-2 step (batch {z['batch']} x {z['seq']}) | out of memory | |")
    else:
        rows.append(f"| ZeRO-3 stage-2 step ({z.get('params', 0) / 1e9:.2f}B params, batch {z.get('batch')} x "
                    f"{z.get('seq')}) | {z.get('step_s', 0):.2f} s, peak {gib(z.get('peak_gib'))} | |")
    head = f"GPU suite, {results['device_name']}, {results['date']}{' (DRY RUN: tiny shapes)' if results['dry_run'] else ''}"
    return head + "\n\n" + "\n".join(rows) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, seconds (CI)")
    p.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    p.add_argument("--out", default="work_dirs/gpu_suite", help="folder for gpu_suite.json and gpu_suite.md")
    p.add_argument("--skip", nargs="*", default=[], choices=("aligner_share", "labeler", "vs_transformers", "zero3"))
    args = p.parse_args(argv)
    shapes = DRY if args.dry_run else FULL
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no GPU here: run with --dry-run (tiny shapes on the CPU) or on a GPU machine")
    import alignkit.testing.demo  # noqa: F401  (the demo ViT config and tokenizer for --dry-run)

    torch.manual_seed(0)
    results = dict(dry_run=args.dry_run, device=device, date=datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), device_name=torch.cuda.get_device_name() if device.startswith("cuda") else "CPU",
        torch=torch.__version__)
    started = time.perf_counter()
    if "aligner_share" not in args.skip:
        results["aligner_share"] = aligner_share(shapes, device)
        print("aligner_share", results["aligner_share"], flush=True)
    if "labeler" not in args.skip:
        results["labeler"] = labeler_throughput(shapes, device)
        print("labeler", results["labeler"], flush=True)
    if "vs_transformers" not in args.skip:
        batch = results.get("aligner_share", {}).get("batch", shapes["batch"])
        results["vs_transformers"] = vs_transformers(shapes, device, batch)
        print("vs_transformers", results["vs_transformers"], flush=True)
    if "zero3" not in args.skip:
        results["zero3_stage2"] = zero3_stage2(shapes, device)
        print("zero3_stage2", results["zero3_stage2"], flush=True)
    results["total_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_suite.json").write_text(json.dumps(results, indent=1))
    (out / "gpu_suite.md").write_text(markdown(results))
    print(markdown(results))
    print(f"written: {out / 'gpu_suite.json'}, {out / 'gpu_suite.md'} ({results['total_s']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
