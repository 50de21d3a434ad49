"""Top-n labelling throughput and peak memory: chunked_topn against a naive full sort.

Shape of the paper (LLaVA-1.5 + CLIP ViT-L/14-336 + 2of12): 576 patches per
image, C = 768, V = 41,242 words, n = 10. Inputs are random unit vectors (the
cost does not depend on the values). Prints medians and ratios measured in
this run; never asserts on time.

    python benchmarks/bench_labeler.py --quick              # ~1 min on 2 CPU cores
    python benchmarks/bench_labeler.py                      # paper shape, more repeats, more chunk sizes
    python benchmarks/bench_labeler.py --device cuda        # GPU: fp32 and bf16 search
    python benchmarks/bench_labeler.py --device cuda --e2e ViT-L-14-336   # whole labeler, random weights

Baseline: the full (M, V) similarity matrix and ``torch.sort`` of every row.
Peak memory is the extra memory of one call beyond its inputs: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the peak RSS of a fresh
subprocess that runs one call (large buffers are returned to the OS on free,
so RSS tracks live tensors).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from alignkit.labelers import CLIPTopNLabeler
from alignkit.labelers.functional import chunked_topn, naive_topn
from alignkit.utils.validate import DTYPES



def make_inputs(m: int, c: int, v: int, device: str, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    # In-place normalisation: no second copy, so the setup peak stays below a call's peak.
    bank = torch.randn(v, c, generator=gen, device=device)
    bank /= bank.norm(dim=1, keepdim=True)
    dense = torch.randn(m, c, generator=gen, device=device)
    dense /= dense.norm(dim=1, keepdim=True)
    return dense, bank


def run_method(method: str, dense, bank, k: int, chunk: int, dtype: str):
    if method == "naive":
        return naive_topn(dense, bank, k)
    return chunked_topn(dense, bank, k, chunk_size=chunk, compute_dtype=DTYPES[dtype])


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """VmHWM: this process's peak RSS. (ru_maxrss would do, but Linux carries it over from the parent
    through fork and exec, so a child forked from a big benchmark process reports the parent's peak.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_memory_here(args) -> int:
    """Extra bytes of one call in this process (CUDA allocator, or CPU peak RSS)."""
    dense, bank = make_inputs(args.images * args.patches, args.dim, args.words, args.device)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_method(args.method, dense, bank, args.top_n, args.chunk, args.dtype)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = rss_bytes()
    run_method(args.method, dense, bank, args.top_n, args.chunk, args.dtype)
    return peak_rss_bytes() - base


def measure_memory(args, method: str, chunk: int, dtype: str) -> int:
    if args.device == "cuda":
        ns = argparse.Namespace(**{**vars(args), "method": method, "chunk": chunk, "dtype": dtype})
        return measure_memory_here(ns)
    cmd = [sys.executable, __file__, "--_memory", "--device", "cpu", "--images", str(args.images),
           "--patches", str(args.patches), "--dim", str(args.dim), "--words", str(args.words),
           "--top-n", str(args.top_n), "--_method", method, "--_chunk", str(chunk), "--_dtype", dtype]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["bytes"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="one image, fewer repeats and chunk sizes")
    p.add_argument("--images", type=int, default=None, help="images per call (default: 1 CPU, 64 CUDA)")
    p.add_argument("--patches", type=int, default=576)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--words", type=int, default=41_242)
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--e2e", metavar="MODEL", default=None,
                   help="time a whole CLIPTopNLabeler on this open_clip model (random weights, default word list)")
    p.add_argument("--_memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_method", default="chunked", help=argparse.SUPPRESS)
    p.add_argument("--_chunk", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--_dtype", default="float32", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.images is None:
        args.images = 1 if args.device == "cpu" else 64
    if args._memory:
        args.method, args.chunk, args.dtype = args._method, args._chunk, args._dtype
        print(json.dumps({"bytes": measure_memory_here(args)}))
        return

    repeats = args.repeats or (3 if args.quick else 7)
    if args.e2e:
        return end_to_end(args, repeats)
    m = args.images * args.patches
    chunks = [64, m] if args.quick else [16, 64, 256, 1024, 4096, m]
    chunks = sorted({c for c in chunks if c <= m})
    dtypes = ["float32", "bfloat16"]
    print(f"device={args.device} threads={torch.get_num_threads()} M={m} patches ({args.images} images x "
          f"{args.patches}), C={args.dim}, V={args.words}, n={args.top_n}, repeats={repeats}")
    dense, bank = make_inputs(m, args.dim, args.words, args.device)

    naive_t = timed(lambda: naive_topn(dense, bank, args.top_n), args.device, repeats)
    naive_mem = measure_memory(args, "naive", 0, "float32")
    print(f"\n{'method':<28}{'median s':>10}{'patches/s':>13}{'speed-up':>10}{'peak MiB':>10}{'mem ratio':>10}")
    print(f"{'naive full sort fp32':<28}{naive_t:>10.4f}{m / naive_t:>13.0f}{1.0:>10.2f}"
          f"{naive_mem / 2**20:>10.1f}{1.0:>10.2f}")
    ref = naive_topn(dense, bank, args.top_n)
    for dtype in dtypes:
        for chunk in chunks:
            t = timed(lambda: chunked_topn(dense, bank, args.top_n, chunk_size=chunk,
                                           compute_dtype=DTYPES[dtype]), args.device, repeats)
            mem = measure_memory(args, "chunked", chunk, dtype)
            scores, ids = chunked_topn(dense, bank, args.top_n, chunk_size=chunk, compute_dtype=DTYPES[dtype])
            agree = (ids == ref[1]).float().mean().item()
            bound = chunk * args.words * DTYPES[dtype].itemsize / 2**20
            print(f"{f'chunked {dtype} chunk={chunk}':<28}{t:>10.4f}{m / t:>13.0f}{naive_t / t:>10.2f}"
                  f"{mem / 2**20:>10.1f}{mem / naive_mem:>10.3f}   (chunk x V buffer {bound:.1f} MiB, "
                  f"ids agree {agree:.4f})")
    flops = 2 * m * args.dim * args.words
    print(f"\nsimilarity FLOPs per call: {flops / 1e9:.1f} GFLOP ({flops / m / 1e6:.1f} MFLOP per patch)")


def end_to_end(args, repeats: int) -> None:
    """Images/s of encode_patches and label for a real-size model (random weights: speed only)."""
    import tempfile

    precision = "bf16" if args.device == "cuda" else "fp32"
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        lab = CLIPTopNLabeler(args.e2e, pretrained=None, word_list=None, top_n=args.top_n, device=args.device,
                              precision=precision, cache_dir=cache)
        sync(args.device)
        build = time.perf_counter() - t
    b = args.images
    h, w = lab.image_size
    images = torch.randn(b, 3, h, w, device=args.device)
    enc = timed(lambda: lab.encode_patches(images), args.device, repeats)
    dense = lab.encode_patches(images)
    lab_t = timed(lambda: lab.label(dense), args.device, repeats)
    print(f"e2e {args.e2e} precision={precision} device={args.device} batch={b} grid={lab.grid} "
          f"C={lab.embed_dim} V={lab.num_words} n={lab.top_n}")
    print(f"construction incl. text bank of {lab.num_words} words: {build:.1f} s")
    print(f"encode_patches: {enc:.4f} s/batch = {b / enc:.1f} images/s")
    print(f"label:          {lab_t:.4f} s/batch = {b / lab_t:.1f} images/s")
    total = enc + lab_t
    print(f"both:           {b / total:.1f} images/s -> 558,128 images in {558_128 / (b / total) / 60:.1f} min")


if __name__ == "__main__":
    main()
