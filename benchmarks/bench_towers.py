"""open_clip vs transformers vision tower: forward speed, and how far apart their preprocessing is.

Two measurements behind the choice of the default backend (projects/sea/README.md):

1. **Tower forward.** One ``forward_features`` (layer −2 features + dense
   embeddings) of a CLIP ViT built with random weights in each library at the
   same shape; median wall time over repeats, ratio transformers / open_clip,
   measured in this run. ``--shape l336`` is LLaVA-1.5's ViT-L/14-336;
   ``b16`` (default) a ViT-B/16-224 that runs in seconds on a CPU.
2. **Preprocessing.** open_clip's eval transform for ``ViT-L-14-336`` /
   ``openai`` (what ``OpenCLIPImageProcessor`` runs) against transformers'
   PIL ``CLIPImageProcessor`` with openai/clip-vit-large-patch14-336's
   ``preprocessor_config.json`` (what LLaVA, LLaVA-HF and an exported model
   run), on scikit-image's sample photographs: per-pixel differences in
   normalised units.

    python benchmarks/bench_towers.py                   # ~1 min on 2 CPU cores
    python benchmarks/bench_towers.py --shape l336 --repeats 5
    python benchmarks/bench_towers.py --device cuda --shape l336 --batch 32 --dtype bfloat16

Never asserts on time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import open_clip
import torch
from PIL import Image

from alignkit.datasets import OpenCLIPImageProcessor
from alignkit.datasets.hf_image_processor import HFImageProcessor, pil_processor_class
from alignkit.towers.open_clip import forward_features as open_clip_forward
from alignkit.towers import transformers as hf_tower

SHAPES = {  # name: (image size, patch, width, layers, heads, joint width C)
    "b16": (224, 16, 768, 12, 12, 512),
    "l336": (336, 14, 1024, 24, 16, 768),
}
OPENAI_CLIP_336 = dict(  # openai/clip-vit-large-patch14-336 preprocessor_config.json
    size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_center_crop=True, resample=3,
    image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
)


def build_towers(shape: str, device: str, dtype: torch.dtype):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    size, patch, width, layers, heads, embed = SHAPES[shape]
    name = f"bench-vit-{shape}"
    open_clip.factory._MODEL_CONFIGS[name] = dict(
        embed_dim=embed, quick_gelu=True,
        vision_cfg=dict(image_size=size, patch_size=patch, width=width, layers=layers, head_width=width // heads),
        text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=1),
    )
    oc = open_clip.create_model(name).visual.to(device, dtype).eval()
    cfg = CLIPVisionConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=size, patch_size=patch, projection_dim=embed,
                           hidden_act="quick_gelu")
    hf = CLIPVisionModelWithProjection(cfg).to(device, dtype).eval()
    return oc, hf, size


def time_forward(fn, repeats: int, device: str) -> list[float]:
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[1:]


def bench_forward(args) -> dict:
    dtype = getattr(torch, args.dtype)
    oc, hf, size = build_towers(args.shape, args.device, dtype)
    images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(args.device, dtype)
    t_oc = statistics.median(time_forward(lambda: open_clip_forward(oc, images, (-2,)), args.repeats, args.device))
    t_hf = statistics.median(time_forward(lambda: hf_tower.forward_features(hf, images, (-2,)), args.repeats,
                                          args.device))
    return dict(shape=args.shape, batch=args.batch, dtype=args.dtype, device=args.device,
                open_clip_s=round(t_oc, 4), transformers_s=round(t_hf, 4), ratio_transformers_over_open_clip=round(
                    t_hf / t_oc, 3))


def photos() -> list[Image.Image]:
    from alignkit.testing.demo import DEMO_CAPTIONS, _rgb
    import skimage.data

    return [Image.fromarray(_rgb(getattr(skimage.data, name)())) for name in DEMO_CAPTIONS]


def bench_preprocessing() -> dict:
    oc = OpenCLIPImageProcessor(model_name="ViT-L-14-336", pretrained="openai")
    hf = HFImageProcessor(processor=pil_processor_class("clip")(**OPENAI_CLIP_336))
    diffs, means = [], []
    for image in photos():
        d = (oc(image) - hf(image)).abs()  # (3, 336, 336), normalised units
        diffs.append(float(d.max()))
        means.append(float(d.mean()))
    return dict(images=len(diffs), max_abs_diff=round(max(diffs), 4), median_of_max=round(statistics.median(diffs), 4),
                mean_abs_diff=round(float(np.mean(means)), 5))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="b16")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = p.parse_args(argv)
    out = dict(forward=bench_forward(args), preprocessing=bench_preprocessing())
    f = out["forward"]
    print(f"tower forward ({f['shape']}, batch {f['batch']}, {f['dtype']}, {f['device']}): open_clip "
          f"{f['open_clip_s']:.3f} s, transformers {f['transformers_s']:.3f} s (median of {args.repeats}); "
          f"ratio transformers/open_clip = {f['ratio_transformers_over_open_clip']:.2f}")
    pre = out["preprocessing"]
    print(f"preprocessing, open_clip vs transformers CLIPImageProcessor on {pre['images']} photographs: "
          f"max |diff| {pre['max_abs_diff']} (median over images {pre['median_of_max']}), "
          f"mean |diff| {pre['mean_abs_diff']} (normalised units)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
