"""Benchmark: what the label cache's first-read value check costs, against reading the shard at all.

One shard at LLaVA-Pretrain's shape (4,096 images x 576 patches x top-10, V = 41,242:
uint16 ids + float16 scores, 90 MiB), written with ``LabelCacheWriter``. Measured in
one run, medians over repeats (page cache warm, so this is CPU cost, not disk):

- ``check``: ``LabelCache._check_values`` on the shard's memory maps (range of every
  id, finiteness of every score), done once per shard per process;
- ``sha256``: hashing the shard file (``verify()``), the opt-in full check;
- ``read``: one ``get_batch`` of 32 random samples from an already checked shard.

    python benchmarks/bench_label_cache.py            # 4096 images per shard
    python benchmarks/bench_label_cache.py --quick    # 512 images

Nothing here asserts on time; read the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alignkit.labelers.cache import LabelCache, LabelCacheWriter, new_manifest, sha256_file, shard_name
from alignkit.structures import PatchLabels

GRID, TOP_N, NUM_WORDS = (24, 24), 10, 41_242


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="512 images, 3 repeats")
    args = p.parse_args()
    n, repeats = (512, 3) if args.quick else (args.images, args.repeats)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    p_, ids = GRID[0] * GRID[1], [f"{i:09d}" for i in range(n)]
    words = torch.randint(0, NUM_WORDS, (n, p_, TOP_N), generator=g)
    scores = torch.rand(n, p_, TOP_N, generator=g).sort(-1, descending=True).values
    with tempfile.TemporaryDirectory() as tmp:
        manifest = new_manifest({"backend": "open_clip", "top_n": TOP_N}, num_words=NUM_WORDS, grid=GRID,
                                precision="float32", data={"num_no_image": 0}, shard_size=n, num_images=n)
        writer = LabelCacheWriter(Path(tmp), manifest)
        writer.open()
        shard = writer.shard(0, 0, n - 1)
        shard.add(PatchLabels(words, scores, GRID), ids)
        writer.finish({0: shard.write()})
        size = (Path(tmp) / shard_name(0)).stat().st_size
        cache = LabelCache(tmp)
        w, s = cache._arrays(0)  # maps (and checks) once
        t_check = median_s(lambda: cache._check_values(0, w, s), repeats)
        t_hash = median_s(lambda: sha256_file(Path(tmp) / shard_name(0)), repeats)
        rng = np.random.default_rng(0)
        t_read = median_s(lambda: cache.get_batch(rng.choice(ids, 32).tolist()), repeats * 5)
    print(f"shard: {n} images x {p_} patches x {TOP_N} slots, {size / 2**20:.1f} MiB, 1 thread")
    print(f"check (once per shard per process): {t_check * 1e3:8.1f} ms  ({size / t_check / 2**30:.2f} GiB/s)")
    print(f"sha256 of the shard (verify):       {t_hash * 1e3:8.1f} ms  -> check / sha256 = {t_check / t_hash:.2f}")
    print(f"get_batch of 32 samples:            {t_read * 1e3:8.2f} ms  -> check = {t_check / t_read:.0f} batches")


if __name__ == "__main__":
    main()
