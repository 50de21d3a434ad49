"""Cost of one sample's image with the CLIP ViT-L/14-336 transform: LLaVA's opener vs ``open_image``.

Three files, each through (a) LLaVA's ``Image.open(path).convert('RGB')`` + the
transform and (b) ``open_image`` + the transform, in the same run:

- ``strip``: a 3000×1 PNG (~90 bytes). The shortest-side resize makes it
  1,008,000×336; ``open_image`` refuses it from its header (``image_too_large``).
- ``jpeg``: a 4000×3000 photo-like JPEG under ``--max-pixels 4000000``:
  ``open_image`` decodes it at 1/2 per side (DCT scaling) instead of in full.
- ``photo``: a 640×480 JPEG (LLaVA-Pretrain's usual size): the same pixels and
  the same cost on both paths — the checks are free for ordinary images.

For each: the median time, the peak resident memory of a fresh process
(``ru_maxrss``, so nothing of one case leaks into the next) and the ratio
(a / b). Nothing here asserts on time; the machine may be shared, read the ratios.

    python benchmarks/bench_image_io.py             # 5 repeats
    python benchmarks/bench_image_io.py --quick     # 2 repeats
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image


def write_files(folder: str) -> dict[str, str]:
    g = np.random.default_rng(0)
    paths = dict(strip=os.path.join(folder, "strip.png"), jpeg=os.path.join(folder, "big.jpg"),
                 photo=os.path.join(folder, "photo.jpg"))
    Image.new("L", (3000, 1), 128).save(paths["strip"])
    # Smooth content (a low-resolution noise upsampled) so JPEG sizes look like photographs.
    big = Image.fromarray(g.integers(0, 256, (75, 100, 3), dtype=np.uint8)).resize((4000, 3000), Image.BILINEAR)
    big.save(paths["jpeg"], quality=90)
    big.resize((640, 480), Image.BILINEAR).save(paths["photo"], quality=90)
    return paths


def one_case(path: str, opener: str, repeats: int, max_pixels: int) -> dict:
    """Run in a fresh process: median seconds per sample and peak RSS."""
    from alignkit.datasets import OpenCLIPImageProcessor
    from alignkit.datasets.image_io import ImageError, open_image

    proc = OpenCLIPImageProcessor(model_name="ViT-L-14-336", pretrained="openai")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, outcome = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        try:
            if opener == "llava":
                with Image.open(path) as im:
                    image = im.convert("RGB")
            else:
                image = open_image(path, max_pixels=max_pixels)
            outcome = f"decoded {image.size[0]}×{image.size[1]} -> {tuple(proc(image).shape)}"
        except ImageError as e:
            outcome = f"skipped ({e.reason})"
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(seconds=statistics.median(times), peak_mb=peak / 1024, extra_mb=(peak - base) / 1024,
                outcome=outcome)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-pixels", type=int, default=4_000_000)
    parser.add_argument("--case", nargs=3, metavar=("PATH", "OPENER", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one_case(args.case[0], args.case[1], int(args.case[2]), args.max_pixels)))
        return
    repeats = 2 if args.quick else 5
    with tempfile.TemporaryDirectory() as folder:
        paths = write_files(folder)
        print(f"{'case':6} {'opener':10} {'median s':>9} {'peak MB':>8} {'+MB':>7}  outcome")
        for name, path in paths.items():
            res = {}
            for opener in ("llava", "open_image"):
                out = subprocess.run([sys.executable, __file__, "--max-pixels", str(args.max_pixels),
                                      "--case", path, opener, str(repeats)],
                                     check=True, capture_output=True, text=True).stdout
                res[opener] = r = json.loads(out.strip().splitlines()[-1])
                print(f"{name:6} {opener:10} {r['seconds']:9.4f} {r['peak_mb']:8.0f} {r['extra_mb']:7.0f}  {r['outcome']}")
            a, b = res["llava"], res["open_image"]
            print(f"{name:6} ratio llava/open_image: time {a['seconds'] / b['seconds']:.1f}x, "
                  f"extra memory {a['extra_mb'] / max(b['extra_mb'], 1):.1f}x")


if __name__ == "__main__":
    main()
