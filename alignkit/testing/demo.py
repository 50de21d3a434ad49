"""The embedded demo: a tiny CLIP, a tiny tokenizer and real photographs, all local, all offline.

``projects/sea/configs/demo_tiny.py`` imports this module (``custom_imports``),
which registers:

- open_clip model config ``alignkit-demo-vit``: a CLIP ViT with random weights
  (64 px images, 8 px patches -> an 8×8 grid, width 64, 2 blocks, joint width 32)
  and a small causal text tower;
  ``alignkit-demo-vit-32``: the same at 32 px (a 4×4 grid: 16 visual tokens), for
  ``demo_smollm2.py``, where every visual token goes through a real 30-layer LLM;
- ``demo_tokenizer`` (``FUNCTIONS``): a SentencePiece-style BPE tokenizer
  (``alignkit.testing.metaspace_bpe_tokenizer``) whose merges spell out the
  words of the demo captions, so captions take a few tokens per word;
- ``DemoReportHook`` (``HOOKS``): prints where the outputs are, and that the weights are random;
- ``DemoLLaVAPretrainDataset`` (``DATASETS``): ``LLaVADataset`` over
  LLaVA-Pretrain-format data that it writes on first use with
  :func:`write_demo_data`: public-domain sample photographs shipped with
  scikit-image (``skimage.data``) and captions written for this project.

Every weight in the demo is random: it shows the pipeline running, not a
trained model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from alignkit.datasets import LLaVADataset
from alignkit.datasets.tokenizers import build_tokenizer
from alignkit.registry import DATASETS, FUNCTIONS, HOOKS
from alignkit.testing.tokenizers import DEMO_WORDS, METASPACE, chain_merges, metaspace_bpe_tokenizer
from alignkit.utils.io import atomic_path

DEMO_CLIP = "alignkit-demo-vit"
DEMO_CLIP_32 = "alignkit-demo-vit-32"

# skimage.data function -> captions written for alignkit (LLaVA-Pretrain style: one short description).
DEMO_CAPTIONS = {
    "astronaut": [
        "an astronaut in a white space suit smiling in front of an american flag",
        "portrait of a woman astronaut holding a helmet",
        "a smiling astronaut posing for an official photo",
    ],
    "chelsea": [
        "a tabby cat with green eyes looking to the side",
        "close up of an orange cat sitting in front of a grey wall",
        "a young cat with striped fur",
    ],
    "coffee": [
        "a cup of coffee on a saucer with a spoon on a red table",
        "a white coffee cup seen from above",
        "black coffee in a white cup with a small spoon",
    ],
    "rocket": [
        "a rocket standing on the launch pad under a blue sky",
        "a tall white rocket with a tower beside it",
        "a space rocket ready for launch on a clear day",
    ],
    "cat": [
        "a cat with striped fur and bright eyes",
        "a small tabby cat looking at something",
    ],
    "camera": [
        "a black and white photo of a man with a camera on a tripod",
        "a photographer standing on the grass with an old camera",
    ],
    "coins": [
        "many old coins on a dark background",
        "a grey picture of round coins in rows",
    ],
    "hubble_deep_field": [
        "a deep field image of space full of distant galaxies",
        "many small bright galaxies on a black sky",
    ],
    "colorwheel": [
        "a colour wheel with every hue from red to blue",
        "a round rainbow of colours on a white background",
    ],
    "clock": [
        "a grey picture of a wall clock",
        "a clock face with hands and numbers",
    ],
    "immunohistochemistry": [
        "a microscope image of stained tissue in brown and blue",
        "cells seen through a microscope with a brown stain",
    ],
    "horse": [
        "the black silhouette of a horse on a white background",
        "a horse shape in black and white",
    ],
}


def _register_open_clip() -> None:
    import open_clip

    for name, size in ((DEMO_CLIP, 64), (DEMO_CLIP_32, 32)):
        open_clip.factory._MODEL_CONFIGS.setdefault(
            name,
            dict(
                embed_dim=32,
                vision_cfg=dict(image_size=size, patch_size=8, width=64, layers=2, head_width=32),
                text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
            ),
        )


_register_open_clip()


def _caption_words() -> list[str]:
    words = {w for captions in DEMO_CAPTIONS.values() for c in captions for w in c.split()}
    return sorted(words)


@FUNCTIONS.register_module()
def demo_tokenizer():
    """The demo LLM's tokenizer: SentencePiece-style BPE that knows the caption words whole."""
    words = list(dict.fromkeys([*DEMO_WORDS, *_caption_words()]))
    return metaspace_bpe_tokenizer(chain_merges(words, METASPACE), add_bos=True)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def write_demo_data(root: str | os.PathLike) -> str:
    """Write the demo images and ``demo_pretrain.json`` (LLaVA-Pretrain format) under ``root``; return the JSON path.

    Idempotent: files already there are kept. Images are resized so the longer
    side is 256 px (smaller files; the demo encoder reads 64 px anyway).
    """
    import skimage.data
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    ann = root / "demo_pretrain.json"
    rows = []
    for name, captions in DEMO_CAPTIONS.items():
        rel = f"images/{name}.png"
        path = root / rel
        if not path.exists():
            image = Image.fromarray(_rgb(getattr(skimage.data, name)()))
            image.thumbnail((256, 256))
            with atomic_path(path, unique=True) as tmp:
                image.save(tmp, format="PNG")
        for i, caption in enumerate(captions):
            rows.append(
                {
                    "id": f"{name}-{i}",
                    "image": rel,
                    "conversations": [
                        {"from": "human", "value": "<image>\nDescribe the image briefly."},
                        {"from": "gpt", "value": caption},
                    ],
                }
            )
    if not ann.exists():
        with atomic_path(ann, unique=True) as tmp:
            tmp.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return str(ann)


@DATASETS.register_module()
class DemoLLaVAPretrainDataset(LLaVADataset):
    """``LLaVADataset`` on the demo data, written under ``data_root`` on first use.

    Args:
        data_root: where the images and ``demo_pretrain.json`` go.
        tokenizer: by default ``demo_tokenizer()``; else anything ``LLaVAModel(tokenizer=...)``
            takes, e.g. ``dict(type='smollm2_tokenizer')`` (``demo_smollm2.py``).
        **kwargs: ``LLaVADataset``'s (``image_processor``, ``image_token_length``, ...).
    """

    def __init__(self, data_root: str, tokenizer=None, **kwargs) -> None:
        # Absolute, so BaseDataset does not join a relative data_root onto it a second time.
        ann = os.path.abspath(write_demo_data(data_root))
        kwargs.setdefault("template", "plain")
        tokenizer = demo_tokenizer() if tokenizer is None else build_tokenizer(tokenizer)
        super().__init__(ann_file=ann, tokenizer=tokenizer, data_root=data_root, **kwargs)


@HOOKS.register_module()
class DemoReportHook(Hook):
    """At the end of the demo, say where its outputs are and that its weights are random."""

    priority = "VERY_LOW"
    RANDOM_NOTE = (
        "NOTE: every weight in this demo (CLIP, LLM, adapter) started RANDOM; the model has learned\n"
        "  nothing useful. It shows the SEA pipeline running end to end, offline, on a CPU."
    )

    def __init__(self, note: str | None = None) -> None:
        self.note = self.RANDOM_NOTE if note is None else note

    def after_train(self, runner) -> None:
        if not is_main_process():
            return
        from mmengine.runner.checkpoint import find_latest_checkpoint

        work_dir = Path(runner.work_dir)
        lines = [
            "",
            "alignkit demo finished.",
            f"  checkpoint : {find_latest_checkpoint(str(work_dir))}",
            f"  adapter    : {work_dir / 'adapter.safetensors'} (the stage-1 artifact)",
            f"  logs       : {runner.log_dir}",
            f"  metrics    : {Path(runner.log_dir) / 'vis_data'} (scalars.json: losses, temperature, pair counts)",
            "  " + self.note,
        ]
        print("\n".join(lines), flush=True)
