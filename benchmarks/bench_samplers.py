"""Benchmark of the SEA sampler chain on a LLaVA-1.5 stage-1 batch.

Compose([SimilarityWeightedSampler, WindowSampler(2), DedupSampler]) on
256 images x 576 patches (24x24, CLIP ViT-L/14-336) x top-10 labels
= 1,474,560 candidate pairs over a 41,242-word list, scores random positive
with ~1 % <= 0. Prints, from one run: the median time of the vectorised chain,
the peak memory of one call, and the ratio against a straightforward per-patch
Python implementation measured in the same run.

    python benchmarks/bench_samplers.py                   # full paper shape, 1 CPU thread
    python benchmarks/bench_samplers.py --quick           # 32 images, 3 repeats
    python benchmarks/bench_samplers.py --device cuda

Times are wall-clock medians; the machine may be shared and noisy, so read
the ratio, not the absolute numbers. Nothing here asserts on time.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

import torch

from alignkit import reference
from alignkit.registry import SAMPLERS
from alignkit.structures import PairSet, PatchLabels

GRID = (24, 24)
TOP_N = 10
NUM_WORDS = 41_242
WINDOW = 2
SEA_CHAIN = dict(
    type="Compose",
    samplers=[
        dict(type="SimilarityWeightedSampler"),
        dict(type="WindowSampler", window=WINDOW),
        dict(type="DedupSampler"),
    ],
)


def make_labels(images: int, seed: int) -> PatchLabels:
    """Random labels shaped like a labeler's output: K distinct-ish words, scores sorted descending."""
    g = torch.Generator().manual_seed(seed)
    p = GRID[0] * GRID[1]
    words = torch.randint(0, NUM_WORDS, (images, p, TOP_N), generator=g)
    scores = torch.rand(images, p, TOP_N, generator=g) * 0.3 + 1e-3  # CLIP-like cosine range
    # ~1 % of the slots get a score <= 0 (a labeler with min_score = 0 would have dropped them)
    non_positive = torch.rand(images, p, TOP_N, generator=g) < 0.01
    scores = torch.where(non_positive, -torch.rand(images, p, TOP_N, generator=g) * 0.05, scores)
    scores, order = scores.sort(dim=-1, descending=True)
    return PatchLabels(words.gather(-1, order), scores, GRID)


def reference_chain(labels: PatchLabels, rng: random.Random) -> list[tuple[int, int, int, float]]:
    """SEA sampling written the straightforward way (``alignkit.reference.sample_pairs``), from tensors."""
    lists = [[list(zip(w, s)) for w, s in zip(wi, si)] for wi, si in zip(labels.words.tolist(), labels.scores.tolist())]
    return reference.sample_pairs(lists, labels.grid, rng, window=WINDOW)


def torch_loop_reference(labels: PatchLabels, gen: torch.Generator) -> list[tuple[int, int, int, float]]:
    """The same, still per patch, but with one torch call per patch (a direct port of Eq. 7)."""
    h, w = labels.grid
    per_window: dict[tuple[int, int, int], list] = {}
    for b in range(labels.batch_size):
        for p in range(h * w):
            valid = (labels.words[b, p] >= 0) & (labels.scores[b, p] > 0)
            if not bool(valid.any()):
                continue
            j = int(torch.multinomial(torch.where(valid, labels.scores[b, p], 0.0), 1, generator=gen))
            pick = (b, p, int(labels.words[b, p, j]), float(labels.scores[b, p, j]))
            per_window.setdefault((b, (p // w) // WINDOW, (p % w) // WINDOW), []).append(pick)
    per_word: dict[int, list] = {}
    for members in per_window.values():
        pick = members[int(torch.randint(len(members), (1,), generator=gen))]
        per_word.setdefault(pick[2], []).append(pick)
    return [m[int(torch.randint(len(m), (1,), generator=gen))] for m in per_word.values()]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn, device: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_peak_rss_child(images: int, seed: int) -> dict:
    """Peak RSS growth of one chain call, measured in this (child) process.

    The input is built first; then the kernel's peak-RSS mark is reset
    (``/proc/self/clear_refs`` = 5) and the peak after the call is compared with
    the RSS before it. The parent starts this process with
    ``MALLOC_MMAP_THRESHOLD_=65536`` so glibc serves every tensor buffer with
    mmap and returns it on free: RSS then follows the live tensor bytes instead
    of recycling freed heap memory that would hide new allocations.
    """
    torch.set_num_threads(1)
    pairs = PairSet.from_labels(make_labels(images, seed))
    sampler = SAMPLERS.build(SEA_CHAIN)
    sampler(pairs, GRID, torch.Generator().manual_seed(seed))  # warm-up: lazy imports, first-call allocations
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kb("VmRSS")
    out = sampler(pairs, GRID, torch.Generator().manual_seed(seed))
    peak = _proc_status_kb("VmHWM")
    return {"peak_delta_bytes": (peak - before) * 1024, "kept": len(out)}


def measure_cpu_peak(images: int, seed: int) -> str:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, os.path.abspath(__file__), "--_peak-rss-child", "--images", str(images), "--seed", str(seed)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return f"n/a (peak-RSS child failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode})"
    data = json.loads(res.stdout.strip().splitlines()[-1])
    return (
        f"{data['peak_delta_bytes'] / 2**20:.1f} MiB "
        "(process peak-RSS growth during one call, child process, VmHWM reset via /proc/self/clear_refs, "
        "MALLOC_MMAP_THRESHOLD_=65536)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (goal: one core)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=256, help="batch size B (LLaVA-1.5 stage 1: 256)")
    parser.add_argument("--ref-images", type=int, default=8, help="images the Python reference runs on (scaled to --images)")
    parser.add_argument("--quick", action="store_true", help="32 images, 3 repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--_peak-rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._peak_rss_child:
        print(json.dumps(cpu_peak_rss_child(args.images, args.seed)))
        return
    if args.quick:
        args.images, args.repeats = 32, 3
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    torch.set_num_threads(args.threads)

    labels = make_labels(args.images, args.seed)
    pairs = PairSet.from_labels(labels).to(args.device)
    sampler = SAMPLERS.build(SEA_CHAIN)
    stages = sampler.samplers
    gen = torch.Generator(device=args.device).manual_seed(args.seed)

    print(f"device {args.device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(
        f"input: {args.images} images x {GRID[0]}x{GRID[1]} patches x top-{TOP_N} -> M = {len(pairs):,} pairs "
        f"({int((pairs.score <= 0).sum()):,} with score <= 0), V = {NUM_WORDS:,}"
    )

    # --- vectorised chain ---------------------------------------------------------
    out = sampler(pairs, GRID, gen)  # warm-up (first calls allocate, CUDA initialises)
    chain_times = time_call(lambda: sampler(pairs, GRID, gen), args.device, args.repeats)
    chain = statistics.median(chain_times)

    # per stage, each on its own real input
    stage_inputs, cur = [], pairs
    for s in stages:
        stage_inputs.append(cur)
        cur = s(cur, GRID, gen)
    stage_medians = [
        statistics.median(time_call(lambda s=s, x=x: s(x, GRID, gen), args.device, args.repeats))
        for s, x in zip(stages, stage_inputs)
    ]

    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        sampler(pairs, GRID, gen)
        torch.cuda.synchronize()
        peak = (
            f"{(torch.cuda.max_memory_allocated() - base) / 2**20:.1f} MiB "
            "(torch.cuda.max_memory_allocated above the allocation before the call)"
        )
    else:
        peak = measure_cpu_peak(args.images, args.seed)

    # --- straightforward reference, on a subset, scaled ------------------------------
    ref_images = min(args.ref_images, args.images)
    ref_labels = labels[:ref_images]
    rng = random.Random(args.seed)
    ref_times = time_call(lambda: reference_chain(ref_labels, rng), "cpu", max(1, min(args.repeats, 3)))
    ref = statistics.median(ref_times) * args.images / ref_images
    cpu_gen = torch.Generator().manual_seed(args.seed)
    loop_times = time_call(lambda: torch_loop_reference(ref_labels, cpu_gen), "cpu", 1)
    loop = loop_times[0] * args.images / ref_images

    print(f"pairs kept: {len(out):,} (after each stage: {', '.join(f'{len(x):,}' for x in stage_inputs[1:] + [out])})")
    print(f"vectorised chain: median {chain * 1e3:.1f} ms over {args.repeats} repeats "
          f"(min {min(chain_times) * 1e3:.1f}, max {max(chain_times) * 1e3:.1f})")
    for s, t in zip(stages, stage_medians):
        print(f"  {s!r:<36} median {t * 1e3:.1f} ms")
    print(f"peak memory of one call: {peak}")
    print(
        f"Python per-patch reference: {statistics.median(ref_times) * 1e3:.1f} ms on {ref_images} images "
        f"(median of {len(ref_times)}, single-threaded Python, lists conversion included), "
        f"scaled linearly to {args.images} images: {ref * 1e3:.0f} ms"
    )
    print(f"speed-up vs reference: {ref / chain:.1f}x (min time vs min: {min(ref_times) / min(chain_times) * args.images / ref_images:.1f}x)")
    print(
        f"for context, a per-patch torch loop (torch.multinomial per patch, one run on {ref_images} images): "
        f"{loop_times[0] * 1e3:.0f} ms, scaled to {args.images} images: {loop * 1e3:.0f} ms, "
        f"{loop / chain:.0f}x the vectorised chain"
    )
    if args.device == "cuda":
        print("(the references run on the CPU: the speed-ups compare a CUDA chain with CPU Python)")


if __name__ == "__main__":
    main()
