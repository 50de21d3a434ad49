"""Benchmark the align losses: full N×N path vs the chunked (row-block) path.

Forward + backward (gradients to both inputs and to the learnable scalars) of
InfoNCELoss and SigmoidLoss; prints the median time and the peak memory of each
path and the chunked/full ratios, measured in the same run. Never asserts.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated()`` minus what was
allocated before the step (inputs included in neither); on CPU the growth of
the process's max RSS (``resource.getrusage``) over its value once the inputs
exist, each case in a fresh subprocess (so earlier cases do not hide it) with
glibc's mmap threshold fixed (so freed blocks leave the RSS); times on CPU come
from another fresh subprocess with the default allocator.

Default: the paper shape, N = 36,864 pairs (one stage-1 global batch of 256
images × 144 pairs) and E = 4096 (a 7B LLM's width). Each matmul there is
N²·E ≈ 5.6 T multiply-adds: run it on a GPU; on this CPU use ``--quick``.
Where the full path cannot fit (memory is estimated before trying on CPU, an
OOM is caught on CUDA), it says so and also compares both paths at the largest
N (halving) where the full path fits.

    python benchmarks/bench_losses.py --device cpu --quick
    python benchmarks/bench_losses.py --device cuda            # paper shape
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from alignkit.registry import ALIGN_LOSSES

LOSSES = ("InfoNCELoss", "SigmoidLoss")
# Bytes per logit the full path keeps alive at its peak (logits, two log-softmaxes
# and their gradients, in fp32), used to refuse a CPU case that would exhaust RAM.
FULL_PATH_BYTES_PER_LOGIT = 4 * 6


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _mem_available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _maxrss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_case(loss_name, path, n, dim, chunk, repeats, device, dtype):
    """Time forward+backward; return dict(times=[s...], peak=bytes) or dict(oom=True)."""
    torch.manual_seed(0)
    loss = ALIGN_LOSSES.build(dict(type=loss_name, chunk_size=chunk if path == "chunked" else None)).to(device)
    visual = torch.randn(n, dim, device=device, dtype=dtype, requires_grad=True)
    text = torch.randn(n, dim, device=device, dtype=dtype, requires_grad=True)
    params = list(loss.parameters())

    def step():
        value = loss(visual, text)
        grads = torch.autograd.grad(value, [visual, text, *params])
        del value, grads

    # a tiny call first: library start-up (thread pools, cuBLAS workspace) is not the loss's memory
    small = [torch.randn(8, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(2)]
    torch.autograd.grad(loss(*small), [*small, *params])
    del small

    times = []
    try:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _maxrss_bytes()
        for i in range(repeats + 1):  # the first call warms up and is not timed
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if i:
                times.append(time.perf_counter() - t0)
    except torch.OutOfMemoryError:
        return dict(oom=True)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _maxrss_bytes()) - base
    return dict(times=times, peak=peak)


def run_case_isolated(args, loss_name, path, n, chunk):
    """On CPU: times and peak RSS each from a fresh process, so the peak is the case's own."""
    if args.device == "cuda":
        return run_case(loss_name, path, n, args.dim, chunk, args.repeats, "cuda", _DTYPES[args.dtype])

    def worker(repeats, env):
        job = json.dumps([loss_name, path, n, args.dim, chunk, repeats, args.dtype])
        out = subprocess.run([sys.executable, __file__, "--_worker", job], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            return dict(oom=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    # Memory with glibc's mmap threshold fixed: its adaptive one serves big blocks
    # from the heap after the first free and keeps them, so RSS would count freed
    # blocks too. Time without it: a fixed threshold adds page faults to every step.
    memory = worker(1, dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072"))
    timing = worker(args.repeats, dict(os.environ))
    if memory.get("oom") or timing.get("oom"):
        return dict(oom=True)
    return dict(times=timing["times"], peak=memory["peak"])


def full_fits_on_cpu(n):
    avail = _mem_available_bytes()
    return avail is None or FULL_PATH_BYTES_PER_LOGIT * n * n < 0.6 * avail


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _fmt(res):
    if res.get("oom"):
        return "did not fit"
    return f"{statistics.median(res['times']) * 1e3:10.1f} ms  peak {res['peak'] / 2**30:8.3f} GiB"


def compare(args, loss_name, n, chunk):
    """Run chunked and (if it fits) full at N = n; return the full result."""
    chunked = run_case_isolated(args, loss_name, "chunked", n, chunk)
    if args.device == "cpu" and not full_fits_on_cpu(n):
        full = dict(oom=True, skipped=True)
    else:
        full = run_case_isolated(args, loss_name, "full", n, None)
    print(f"{loss_name:12s} N={n:6d} E={args.dim:5d}  full     {_fmt(full)}")
    print(f"{loss_name:12s} N={n:6d} E={args.dim:5d}  chunk={chunk:<5d}{_fmt(chunked)}")
    if full.get("oom") or chunked.get("oom"):
        why = "(estimated, not tried: would exhaust RAM)" if full.get("skipped") else ""
        print(f"{'':12s} full path does not fit at N={n} {why}".rstrip())
    else:
        t = statistics.median(chunked["times"]) / statistics.median(full["times"])
        m = chunked["peak"] / max(full["peak"], 1)
        print(f"{'':12s} chunked/full: time x{t:.2f}, peak memory x{m:.3f}")
    return full


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=36_864, help="pairs per step (paper: 256 images x 144)")
    p.add_argument("--dim", type=int, default=4096, help="LLM width E")
    p.add_argument("--chunk", type=int, default=4096, help="rows per block on the chunked path")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32", help="dtype of the input tokens")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (default: exact fp32)")
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    p.add_argument("--quick", action="store_true", help="N=2048, E=256, chunk=512, 3 repeats (CPU smoke)")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._worker:
        loss_name, path, n, dim, chunk, repeats, dtype = json.loads(args._worker)
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        print(json.dumps(run_case(loss_name, path, n, dim, chunk, repeats, "cpu", _DTYPES[dtype])))
        return
    if args.quick:
        args.n, args.dim, args.chunk, args.repeats = 2048, 256, 512, 3
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        print(
            f"device: {torch.cuda.get_device_name()}, peak = torch.cuda.max_memory_allocated (inputs excluded), "
            f"tf32={args.tf32}"
        )
    else:
        print(f"device: cpu ({torch.get_num_threads()} threads), peak = growth of max RSS (inputs excluded)")
    print(f"inputs {args.dtype}, median of {args.repeats} forward+backward after 1 warm-up")
    print(f"logits matrix at N={args.n}: {args.n**2 * 4 / 2**30:.2f} GiB in fp32")

    for loss_name in args.losses:
        full = compare(args, loss_name, args.n, args.chunk)
        n = args.n
        while full.get("oom") and n > 1024:
            n = max(1024, (n // 2) // 1024 * 1024)
            if args.device == "cpu" and not full_fits_on_cpu(n):
                continue
            print(f"{'':12s} -> the largest N where both run:")
            full = compare(args, loss_name, n, min(args.chunk, max(1, n // 4)))


if __name__ == "__main__":
    main()
