"""``tools/visualize_alignment.py CHECKPOINT_OR_CONFIG [CHECKPOINT] IMAGE... --out DIR``: the paper's Figure 1.

For every image: the image as the vision encoder sees it (the tower's resize and
crop), its patch grid drawn faintly, and on each k×k window of patches the word
of the word list whose LLM embedding (the aligner's word table, Eq. 8) is
nearest by cosine to the window's centre visual token — in a green box when
that word is among the labeler's top-n for the patch, red otherwise. k is the
smallest window that keeps at most ``--max-labels`` labels per side (a 24×24
CLIP-L/336 grid -> k = 2, 12×12 labels; the demo's 8×8 grid -> k = 1).
The title gives the image's metrics (over all its patches, not only the
annotated ones): the nearest-word agreement (share of labelled patches whose
nearest word is a top-n label), the top-1/top-5 retrieval of each patch's best
label among all V words, and the mean cosine to that label.

Writes, under ``--out``: ``<image stem>.png``, a ``<image stem>.json`` sidecar
(the annotated cells: row, col, patch, word, cosine, hit, colour; the metrics)
and ``summary.json`` (every image, the skipped ones with their reason, and the
metrics over all images). ``main`` returns that summary.

The model: a CHECKPOINT (its config is found next to it, see
:mod:`alignkit.cli.common`), CONFIG + CHECKPOINT, or a CONFIG alone (weights as
the config builds them: a random adapter; the title says so). The labeler and
word table are the model's aligner's; for a model without one (the LLaVA-1.5
baseline) pass ``--labeler '{"type": "CLIPTopNLabeler"}'`` (the vision
encoder's open_clip model is filled in).

An image that cannot be read is an error when it is the only one; among
several it is skipped, named on stderr and counted in ``summary.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from mmengine.config import DictAction
from PIL import Image

from alignkit.cli import console, plain
from alignkit.cli.common import check_out_dir, is_config, load_model_and_source
from alignkit.datasets.image_io import ImageError, open_image
from alignkit.engine.metrics.functional import (
    label_cosine,
    label_retrieval,
    nearest_word_hits,
    nearest_words,
)
from alignkit.registry import LABELERS
from alignkit.structures import EMPTY_WORD, PatchLabels
from alignkit.towers.share import share_tower
from alignkit.word_table import build_word_table
from alignkit.utils.validate import check_int

PROG = "visualize_alignment"
HIT, MISS = "#1a7f37", "#c62828"  # green / red boxes under white text


# --- inputs ------------------------------------------------------------------
def read_image(path: str) -> Image.Image:
    """The image at ``path`` as RGB (``open_image``); ValueError naming the path when it cannot be read."""
    try:
        return open_image(path)
    except ImageError as e:
        raise ValueError(f"image {e}") from None


def display_image(image: Image.Image, tensor: torch.Tensor, preprocess_cfg: dict) -> Image.Image:
    """The region the tower sees, at the photo's own resolution when the transform is a plain resize/crop.

    open_clip's 'shortest' mode resizes the short side and centre-crops a square;
    'squash' resizes to a square. Other modes (padding) fall back to the
    un-normalised model input, which is exact but small.
    """
    mode = preprocess_cfg.get("resize_mode", "shortest")
    w, h = image.size
    if mode == "shortest":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return image.crop((left, top, left + s, top + s))
    if mode == "squash":
        s = max(w, h)
        return image.resize((s, s), Image.BICUBIC)
    mean = torch.tensor(preprocess_cfg.get("mean", (0.0, 0.0, 0.0)))[:, None, None]
    std = torch.tensor(preprocess_cfg.get("std", (1.0, 1.0, 1.0)))[:, None, None]
    pixels = (tensor.float().cpu() * std + mean).clamp(0, 1).mul(255).round().byte()  # (3, S, S)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())


# --- the cells ---------------------------------------------------------------
def window_for(grid: tuple[int, int], max_labels: int) -> int:
    """Smallest k with at most ``max_labels`` windows along each side of ``grid``."""
    check_int("--max-labels", max_labels, low=1)
    return max(1, math.ceil(max(grid) / max_labels))


def window_centres(grid: tuple[int, int], k: int) -> torch.Tensor:
    """Long[ceil(H/k)·ceil(W/k)]: the patch index at the centre of every k×k window (partial edge windows too)."""
    h, w = grid
    rows = torch.arange(0, h, k)
    cols = torch.arange(0, w, k)
    rows = torch.minimum(rows + (k - 1) // 2, (rows + k).clamp(max=h) - 1)  # centre, inside a partial window
    cols = torch.minimum(cols + (k - 1) // 2, (cols + k).clamp(max=w) - 1)
    return (rows[:, None] * w + cols[None, :]).reshape(-1)


def image_metrics(visual: torch.Tensor, table: torch.Tensor, labels: PatchLabels, valid) -> dict:
    """Metrics of one image's (P, E) visual tokens against its labels (module docstring)."""
    hit, labelled = nearest_word_hits(visual[None], table, labels, valid=valid)
    top1 = labels.words[0, :, 0]  # (P,) each patch's best label (slots are sorted by score)
    has = top1 != EMPTY_WORD  # (P,) patches with at least one label
    n = int(labelled.sum())
    out = {"labelled_patches": n, "agreement_hits": int(hit.sum()),
           "nearest_word_agreement": float(hit.sum()) / n if n else float("nan")}
    out.update(label_retrieval(visual[has], table, top1[has], ks=(1, 5), valid=valid))
    out["label_cosine"] = label_cosine(visual[has], table, top1[has])
    return out


def _fmt(x: float, pct: bool = False) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{100 * x:.0f}%" if pct else f"{x:.3f}"


def _fit(word: str, max_chars: int) -> str:
    return word if len(word) <= max_chars else word[: max(1, max_chars - 1)] + "…"


def draw(path: Path, picture: Image.Image, grid: tuple[int, int], k: int, cells: list[dict], title: str,
         size_px: int = 900) -> None:
    """Write the Figure-1 PNG of one image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as pe
    import matplotlib.pyplot as plt

    h, w = grid
    dpi = 100
    aspect = 1.08  # figure height / width: the square image plus three title lines
    fig = plt.figure(figsize=(size_px / dpi, size_px / dpi * aspect), dpi=dpi)
    ax = fig.add_axes((0.02, 0.01, 0.96, 0.96 / aspect))
    ax.imshow(picture, extent=(0, w, h, 0), interpolation="bilinear")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    # patch grid faint, window grid a little stronger
    for i in range(1, h):
        ax.axhline(i, color="white", lw=0.6 if i % k == 0 else 0.3, alpha=0.55 if i % k == 0 else 0.25)
    for j in range(1, w):
        ax.axvline(j, color="white", lw=0.6 if j % k == 0 else 0.3, alpha=0.55 if j % k == 0 else 0.25)
    cols = math.ceil(w / k)
    cell_px = size_px * 0.96 / cols
    fontsize = max(6.0, min(10.5, cell_px * 0.11))
    # Bold DejaVu is ~0.62 em per character; truncate so a label stays inside its window.
    max_chars = max(3, int(0.75 * cell_px / (0.62 * fontsize * dpi / 72)))
    outline = [pe.withStroke(linewidth=1.5, foreground="black")]
    for c in cells:
        x, y = c["col"] + 0.5, c["row"] + 0.5
        ax.text(x, y, _fit(c["word"], max_chars), ha="center", va="center", fontsize=fontsize, color="white",
                fontweight="bold", path_effects=outline,
                bbox=dict(boxstyle="round,pad=0.18", fc=c["color"], ec="black", lw=0.4, alpha=0.92))
    fig.suptitle(title, fontsize=10, y=0.995, va="top", linespacing=1.35)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    # A dithered 128-colour palette keeps a photo-backed figure at a few hundred KB instead of ~1 MB
    # (Pillow dithers only when quantizing to a given palette, hence the two steps).
    rgb = Image.open(buf).convert("RGB")
    palette = rgb.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)


# --- the model side ----------------------------------------------------------
def encoder_tower_cfg(enc) -> dict:
    """What names the built encoder's tower (``model_name``, ``pretrained``, ``dense_mode``), as a config
    ``share_tower`` reads; a multi-scale wrapper's is its encoder's. The transformers encoder has no
    ``pretrained`` (``model_name`` is its folder)."""
    enc = getattr(enc, "encoder", enc)
    return {k: getattr(enc, k) for k in ("model_name", "pretrained", "dense_mode") if hasattr(enc, k)}


def labeler_and_table(model, labeler_cfg: dict | None):
    """``(labeler, table (V, E), valid Bool[V], words)`` from the model's aligner, or from ``labeler_cfg``."""
    aligner = getattr(model, "aligner", None)
    if labeler_cfg is None:
        if aligner is None or aligner.labeler is None or aligner.word_table is None:
            raise ValueError(
                "the model has no aligner with a labeler (e.g. the LLaVA-1.5 baseline); pass --labeler "
                "'{\"type\": \"CLIPTopNLabeler\"}' to label its patches with the vision encoder's open_clip model"
            )
        return aligner.labeler, aligner.word_table, aligner.word_valid, list(aligner.words)
    labeler_cfg = share_tower(labeler_cfg, encoder_tower_cfg(model.vision_encoder), name="--labeler")
    labeler = LABELERS.build(dict(labeler_cfg, device=labeler_cfg.get("device", "cpu")))
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer: the word table (Eq. 8) needs the LLM's tokenizer")
    wt = build_word_table(model.tokenizer, model.llm.get_input_embeddings(), list(labeler.words), on_empty="mask")
    return labeler, wt.table, wt.valid, list(labeler.words)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a checkpoint (iter_N.pth; its config is found next to it) or a config (.py)")
    p.add_argument("images", nargs="+", help="[CHECKPOINT] IMAGE...: a checkpoint after a config, then the images")
    p.add_argument("--out", required=True, help="output directory (refused if it holds files, unless --force)")
    p.add_argument("--force", action="store_true", help="write into an --out that already holds files")
    p.add_argument("--max-labels", type=int, default=12, help="at most this many labels per side (default 12)")
    p.add_argument("--window", type=int, default=None, help="label one patch per K×K window (default: from --max-labels)")
    p.add_argument("--labeler", default=None, help="JSON labeler config for a model without an aligner")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--size", type=int, default=900, help="PNG width in pixels (default 900)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE", help="override config entries")
    return p.parse_args(argv)


def _split_model_args(args) -> tuple[str | None, list[str]]:
    """CONFIG CHECKPOINT IMAGE...: the second positional is a checkpoint when the first is a config and it ends .pth."""
    if is_config(args.model) and args.images and args.images[0].endswith((".pth", ".pt", ".ckpt")):
        return args.images[0], args.images[1:]
    return None, list(args.images)


@torch.no_grad()
def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    checkpoint, images = _split_model_args(args)
    if not images:
        raise ValueError("no IMAGE given; expected MODEL [CHECKPOINT] IMAGE... --out DIR")
    if args.window is not None and (args.window < 1 or isinstance(args.window, bool)):
        raise ValueError(f"--window must be a positive int, got {args.window!r}")
    labeler_cfg = json.loads(args.labeler) if args.labeler else None
    out = check_out_dir(args.out, args.force)

    # Read the images first: a bad single image fails before the model is built.
    pictures: list[tuple[str, Image.Image]] = []
    skipped: list[dict] = []
    for path in images:
        try:
            pictures.append((path, read_image(path)))
        except ValueError as e:
            if len(images) == 1:
                raise
            print(f"{PROG}: skipping {e}", file=sys.stderr)
            skipped.append({"path": path, "reason": str(e)})
    if not pictures:
        raise ValueError(f"none of the {len(images)} images could be read: {[s['path'] for s in skipped]}")

    model, _, source = load_model_and_source(args.model, checkpoint, args.cfg_options, args.device)
    labeler, table, valid, words = labeler_and_table(model, labeler_cfg)
    enc = model.vision_encoder
    if enc.transform is None:
        raise ValueError("the vision encoder has no image transform (built with init_empty?)")
    grid = tuple(enc.grid)
    k = args.window or window_for(grid, args.max_labels)
    centres = window_centres(grid, k)  # (cells,)
    device = torch.device(args.device)
    table = table.to(device)
    valid = None if valid is None else valid.to(device)

    results, used_names = [], set()
    all_hits, all_labelled = 0, 0
    for path, image in pictures:
        x = enc.transform(image)  # (3, S, S)
        visual, dense = model.encode_images(x[None].to(device))  # (1, P, E), (1, P, C)
        visual = visual.float()
        labels = labeler.label(dense.float()).to(device)
        ids, cos = nearest_words(visual[0], table, valid=valid)  # (P,), (P,)
        hit = (labels.words[0] == ids[:, None]).any(-1)  # (P,) nearest word is a top-n label
        metrics = image_metrics(visual[0], table, labels, valid)
        all_hits += metrics["agreement_hits"]
        all_labelled += metrics["labelled_patches"]

        c_ids, c_cos, c_hit = ids[centres].tolist(), cos[centres].tolist(), hit[centres].tolist()
        topn = labels.words[0, centres].tolist()
        cells = []
        for n, patch in enumerate(centres.tolist()):
            r, c = divmod(patch, grid[1])
            cells.append(dict(row=r, col=c, patch=patch, word=words[c_ids[n]], word_id=c_ids[n],
                              cosine=round(c_cos[n], 5), hit=bool(c_hit[n]), color=HIT if c_hit[n] else MISS,
                              labels=[words[i] for i in topn[n] if i != EMPTY_WORD]))
        stem = Path(path).stem
        name, i = stem, 1
        while name in used_names:
            i += 1
            name = f"{stem}-{i}"
        used_names.add(name)
        per = "one label per patch" if k == 1 else f"one label per {k}×{k} window"
        random_tower = encoder_tower_cfg(enc).get("pretrained", "") is None
        what = source.describe() + ("; vision encoder: RANDOM weights" if random_tower else "")
        title = (
            f"{Path(path).name}: nearest LLM word per visual token ({what})\n"
            f"green: among the labeler's top-{labeler.top_n} for the patch, red: not; {per}\n"
            f"nearest-word agreement {_fmt(metrics['nearest_word_agreement'], True)} "
            f"({metrics['agreement_hits']}/{metrics['labelled_patches']} patches) · label top-1 "
            f"{_fmt(metrics['label_top1'], True)}, top-5 {_fmt(metrics['label_top5'], True)} · "
            f"label cosine {_fmt(metrics['label_cosine'])}"
        )
        png = out / f"{name}.png"
        draw(png, display_image(image, x, enc.preprocess_cfg), grid, k, cells, title, size_px=args.size)
        record = dict(image=path, png=str(png), grid=list(grid), window=k, num_cells=len(cells),
                      num_hits=sum(c["hit"] for c in cells), metrics=metrics, cells=cells)
        (out / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
        results.append({key: record[key] for key in ("image", "png", "num_cells", "num_hits", "metrics")})
        print(f"{PROG}: wrote {png} ({len(cells)} labels, {record['num_hits']} green)")

    summary = dict(
        source=dict(config=source.config, checkpoint=source.checkpoint, description=source.describe()),
        grid=list(grid), window=k, top_n=labeler.top_n, num_words=len(words),
        images=results, skipped=skipped, num_skipped=len(skipped),
        nearest_word_agreement=all_hits / all_labelled if all_labelled else float("nan"),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    if skipped:
        print(f"{PROG}: skipped {len(skipped)} unreadable image(s), listed in {out / 'summary.json'}", file=sys.stderr)
    return summary


cli = console(main)  # the console script alignkit-visualize-alignment

if __name__ == "__main__":
    main()
