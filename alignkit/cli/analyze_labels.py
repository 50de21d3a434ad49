"""``tools/analyze_labels.py LABEL_CACHE_OR_CONFIG --out DIR``: the paper's Figure 6, for any word list.

What the labeler makes of a dataset: (a) the distribution of the label scores
(every non-empty top-n slot, i.e. scores above ``min_score``); (b) the
distribution of each word's average score over the slots where it is a label;
the word list's utilisation (share of its V words that are ever a label, and
ever a top-1 label) and its most and least used words.

Two sources:

- a label cache directory (``tools/extract_labels.py --out``), read through
  ``LabelCache`` in chunks of ``--batch-size`` samples (a 558k-image cache never
  sits in memory). Word ids are named from the word list the manifest records
  (its sha256 checked), or from ``--word-list``. ``--check-config CONFIG``
  also checks the cache against that config's labeler (``LabelCache`` names
  every differing field);
- a config: its labeler (``labeler``, or the model's ``aligner.labeler`` with
  the vision encoder's open_clip model) runs over ``--images``, or else over the
  images of ``label_data`` (the extract_labels config entry) or of the
  training dataset. Unreadable images are skipped, counted and named.

Writes ``scores.png``, ``word_scores.png``, ``word_usage.png`` and
``summary.json`` under ``--out`` (refused when it holds files, unless
``--force``); ``main`` returns the summary. Counting is vectorised
(``torch.bincount`` over word ids, score bins), one pass, float64 sums.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from mmengine.config import Config, DictAction
from torch.utils.data import DataLoader

from alignkit.cli import console, plain
from alignkit.cli.common import (
    ImageRow,
    LabelDataSettings,
    LlavaImageDataset,
    check_out_dir,
    collate_images,
    import_and_scope,
    load_rows,
)
from alignkit.labelers.cache import LabelCache
from alignkit.labelers.word_list import default_word_list, load_word_list
from alignkit.registry import DATASETS, LABELERS
from alignkit.structures import EMPTY_WORD, PatchLabels
from alignkit.towers.share import share_tower

PROG = "analyze_labels"
FINE_BINS = 4000  # score histogram resolution over [-1, 1] before plotting (0.0005 wide)


class LabelStats:
    """Streaming counts over ``PatchLabels`` batches (module docstring).

    Attributes (after ``update``): ``word_count`` Long[V] (slots holding each
    word), ``top1_count`` Long[V], ``word_score_sum`` Float64[V], ``hist``
    Long[FINE_BINS] of scores over [-1, 1], and totals.
    """

    def __init__(self, num_words: int, top_n: int) -> None:
        self.num_words, self.top_n = int(num_words), int(top_n)
        self.word_count = torch.zeros(self.num_words, dtype=torch.long)
        self.top1_count = torch.zeros(self.num_words, dtype=torch.long)
        self.word_score_sum = torch.zeros(self.num_words, dtype=torch.float64)
        self.hist = torch.zeros(FINE_BINS, dtype=torch.long)
        self.num_images = self.num_patches = self.num_slots = self.num_labels = self.num_unlabelled_patches = 0
        self.num_negative = 0
        self.score_sum = 0.0
        self.score_min, self.score_max = float("inf"), float("-inf")

    def update(self, labels: PatchLabels) -> None:
        w = labels.words.reshape(-1, labels.words.shape[-1]).long().cpu()  # (B·P, K)
        s = labels.scores.reshape(w.shape).double().cpu()  # (B·P, K)
        if w.shape[1] != self.top_n:
            raise ValueError(f"labels have K={w.shape[1]} slots, expected top_n={self.top_n}")
        mask = w != EMPTY_WORD
        ids, sc = w[mask], s[mask]  # (L,) every label slot
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.num_words):
            raise ValueError(f"labels hold word ids in [{int(ids.min())}, {int(ids.max())}], expected [0, {self.num_words})")
        self.word_count += torch.bincount(ids, minlength=self.num_words)
        self.word_score_sum += torch.bincount(ids, weights=sc, minlength=self.num_words)
        top1 = w[:, 0][mask[:, 0]]  # slots are sorted by score: slot 0 is the best label
        self.top1_count += torch.bincount(top1, minlength=self.num_words)
        bins = ((sc.clamp(-1, 1) + 1) / 2 * FINE_BINS).long().clamp(max=FINE_BINS - 1)
        self.hist += torch.bincount(bins, minlength=FINE_BINS)
        self.num_images += labels.batch_size
        self.num_patches += w.shape[0]
        self.num_slots += w.numel()
        self.num_labels += len(ids)
        self.num_unlabelled_patches += int((~mask.any(-1)).sum())
        self.num_negative += int((sc < 0).sum())
        if len(sc):
            self.score_sum += float(sc.sum())
            self.score_min = min(self.score_min, float(sc.min()))
            self.score_max = max(self.score_max, float(sc.max()))

    # ------------------------------------------------------------------ results
    def word_means(self) -> torch.Tensor:
        """Float64[V]: each word's mean score over its label slots (NaN for unused words)."""
        return torch.where(self.word_count > 0, self.word_score_sum / self.word_count.clamp(min=1), float("nan"))

    def summary(self, words: Sequence[str], top_words: int = 20) -> dict:
        v = self.num_words
        used = self.word_count > 0
        means = self.word_means()
        order = torch.argsort(-self.word_count, stable=True)  # most used first, ties by id
        used_ids = torch.nonzero(used).squeeze(1)
        least = used_ids[torch.argsort(self.word_count[used_ids], stable=True)]  # rarest used first

        def entry(i: int) -> dict:
            return dict(word=words[i], id=i, count=int(self.word_count[i]), top1_count=int(self.top1_count[i]),
                        mean_score=float(means[i]))

        nan = float("nan")
        used_means = means[used]
        return dict(
            num_images=self.num_images, num_patches=self.num_patches, top_n=self.top_n, num_words=v,
            num_slots=self.num_slots, num_labels=self.num_labels,
            num_unlabelled_patches=self.num_unlabelled_patches,
            num_used_words=int(used.sum()), utilisation=int(used.sum()) / v,
            num_top1_words=int((self.top1_count > 0).sum()), top1_utilisation=int((self.top1_count > 0).sum()) / v,
            score=dict(
                mean=self.score_sum / self.num_labels if self.num_labels else nan,
                min=self.score_min if self.num_labels else nan, max=self.score_max if self.num_labels else nan,
                median=self.quantile(0.5), share_negative=self.num_negative / self.num_labels if self.num_labels else nan,
            ),
            word_mean_score=dict(
                mean=float(used_means.mean()) if len(used_means) else nan,
                median=float(used_means.median()) if len(used_means) else nan,
                share_negative=float((used_means < 0).double().mean()) if len(used_means) else nan,
            ),
            most_used=[entry(int(i)) for i in order[:top_words] if used[i]],
            least_used=[entry(int(i)) for i in least[:top_words]],
        )

    def quantile(self, q: float) -> float:
        """Approximate score quantile from the fine histogram (to a bin centre: ±0.00025)."""
        total = int(self.hist.sum())
        if total == 0:
            return float("nan")
        i = int(torch.searchsorted(torch.cumsum(self.hist, 0), torch.tensor(q * total), right=False))
        return -1 + (i + 0.5) * 2 / FINE_BINS


# --- sources -----------------------------------------------------------------
def words_of_cache(manifest: dict, word_list: str | None) -> tuple[list[str], str]:
    """The word list a cache was made with, checked against its sha256; ``(words, how found)``."""
    fp = manifest["labeler"]
    want = fp.get("word_list_sha256")
    source = word_list or fp.get("word_list_source", "")
    candidates = []
    if word_list is not None:
        candidates.append(lambda: load_word_list(word_list))
    elif Path(str(source)).is_file():
        candidates.append(lambda: load_word_list(source))
    elif str(source).startswith("pyspellchecker"):
        candidates.append(default_word_list)
    for load in candidates:
        wl = load()
        if want is not None and wl.sha256 != want:
            raise ValueError(
                f"word list {wl.source!r} has sha256 {wl.sha256}, the label cache's labeler.word_list_sha256 is {want}; "
                "pass the word list the cache was made with (--word-list)"
            )
        return list(wl.words), str(wl.source)
    print(f"{PROG}: word list {source!r} of the cache not found; words are shown as #id (pass --word-list)",
          file=sys.stderr)
    return [f"#{i}" for i in range(int(manifest["layout"]["num_words"]))], "ids only"


def labeler_config(cfg: Config) -> dict:
    """The config's labeler: ``labeler``, or ``model.aligner.labeler`` on the vision encoder's model."""
    if "labeler" in cfg:
        return dict(cfg.labeler)
    model = cfg.get("model") or {}
    aligner = model.get("aligner") or {}
    if not isinstance(aligner.get("labeler"), dict):
        raise ValueError(f"config {cfg.filename!r} has neither `labeler` nor `model.aligner.labeler`")
    return share_tower(aligner["labeler"], model.get("vision_encoder") or {})


def image_rows_of_config(cfg: Config):
    """``ImageRow``s of the config's ``label_data`` or training dataset (one per row with an image, in order)."""
    if "label_data" in cfg:
        data = LabelDataSettings.from_config(cfg)
        rows, _, _ = load_rows(data.ann_file, data.image_folder)
    else:
        ds_cfg = (cfg.get("train_dataloader") or {}).get("dataset")
        if ds_cfg is None:
            raise ValueError(f"config {cfg.filename!r} has no label_data and no train_dataloader.dataset; pass --images")
        dataset = DATASETS.build(ds_cfg)
        rows = []
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            if info.get("image") is not None:
                folder = dataset.image_folders[info.get("source", 0)]  # each annotation file has its own
                rows.append(ImageRow(i, info["sample_id"], info["image"], str(Path(folder) / info["image"])))
    # An image on several rows counts once per row, as in a label cache and in training.
    return rows


def build_labeler(cfg: Config, device: str):
    """The config's labeler (:func:`labeler_config`) on ``device``, built under the config's seed (else 0).

    Seeded like :func:`alignkit.cli.common.build_model`: an open_clip model
    with random weights (the demo's) then labels alike, and has the same
    fingerprint, in every run.
    """
    import_and_scope(cfg)
    lab_cfg = dict(labeler_config(cfg), device=device)
    seed = (cfg.get("randomness") or {}).get("seed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else int(seed))
        return LABELERS.build(lab_cfg)


def labels_from_config(cfg: Config, images: list[str] | None, device: str, batch_size: int,
                       failures: list[dict]) -> tuple[object, Iterator[PatchLabels]]:
    """The config's labeler and a generator of its labels over the images (failures appended to ``failures``)."""
    labeler = build_labeler(cfg, device)
    if images:
        rows = [ImageRow(i, str(i), p, p) for i, p in enumerate(images)]
    else:
        rows = image_rows_of_config(cfg)
    if not rows:
        raise ValueError("no images to label (the dataset has no image rows)")
    loader = DataLoader(LlavaImageDataset(rows, labeler.transform), batch_size=batch_size, num_workers=0,
                        collate_fn=collate_images)

    def gen():
        for _, batch, failed in loader:
            for j, reason in failed:
                print(f"{PROG}: skipping {rows[j].path}: {reason}", file=sys.stderr)
                failures.append({"path": rows[j].path, "reason": reason})
            if batch is not None:
                with torch.inference_mode():
                    yield labeler(batch.to(device))

    return labeler, gen()


def labels_from_cache(cache, batch_size: int) -> Iterator[PatchLabels]:
    ids = cache.ids
    for start in range(0, len(ids), batch_size):
        yield cache.get_batch(ids[start:start + batch_size])


# --- plots -------------------------------------------------------------------
def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    path.write_bytes(buf.getvalue())


def _coarse(hist: torch.Tensor, lo: float, hi: float, bins: int) -> tuple[list[float], list[int]]:
    """Rebin the fine [-1, 1] histogram to ``bins`` bins over [lo, hi] (bin edges aligned to fine bins)."""
    a = int((lo + 1) / 2 * FINE_BINS)
    b = max(a + 1, min(FINE_BINS, int((hi + 1) / 2 * FINE_BINS) + 1))
    step = max(1, -(-(b - a) // bins))
    b = min(FINE_BINS, a + step * -(-(b - a) // step))
    h = hist[a:b]
    pad = -len(h) % step
    h = torch.cat([h, h.new_zeros(pad)]).reshape(-1, step).sum(1)
    edges = [-1 + (a + i * step) * 2 / FINE_BINS for i in range(len(h) + 1)]
    return edges, h.tolist()


def plot_all(stats: LabelStats, summary: dict, out: Path, title: str, bins: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10})
    written = []
    # (a) label scores
    fig, ax = plt.subplots(figsize=(7, 4))
    if stats.num_labels:
        edges, counts = _coarse(stats.hist, stats.score_min, stats.score_max, bins)
        ax.stairs(counts, edges, fill=True, color="#3b6ea5", alpha=0.85)
        ax.axvline(summary["score"]["mean"], color="#c62828", lw=1.2, label=f"mean {summary['score']['mean']:.3f}")
        ax.legend(frameon=False)
    ax.set_xlabel("label score (cosine, negated if the labeler negates)")
    ax.set_ylabel("label slots")
    ax.set_title(f"(a) label scores: {stats.num_labels:,} labels, {stats.num_images:,} samples × "
                 f"{stats.num_patches // max(stats.num_images, 1)} patches, top-{stats.top_n}\n{title}", fontsize=10)
    _save(fig, out / "scores.png")
    written.append("scores.png")

    # (b) each word's average score
    fig, ax = plt.subplots(figsize=(7, 4))
    means = stats.word_means()
    used_means = means[stats.word_count > 0]
    if len(used_means):
        ax.hist(used_means.numpy(), bins=bins, color="#5a8f3c", alpha=0.9)
        ax.axvline(0, color="black", lw=0.8)
    wm = summary["word_mean_score"]
    ax.set_xlabel("a word's mean score over the slots where it is a label")
    ax.set_ylabel("words")
    ax.set_title(f"(b) per-word average score: {summary['num_used_words']:,} used words, "
                 f"{100 * wm['share_negative']:.1f}% below 0\n{title}", fontsize=10)
    _save(fig, out / "word_scores.png")
    written.append("word_scores.png")

    # utilisation: rank-frequency and the most used words
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw=dict(width_ratios=(1.2, 1)))
    counts = torch.sort(stats.word_count, descending=True).values
    used = counts[counts > 0]
    if len(used):
        ax1.plot(torch.arange(1, len(used) + 1).numpy(), used.numpy(), color="#3b6ea5")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
    ax1.set_xlabel("word rank (used words)")
    ax1.set_ylabel("label slots")
    ax1.set_title(f"utilisation {100 * summary['utilisation']:.1f}% of {stats.num_words:,} words "
                  f"(top-1: {100 * summary['top1_utilisation']:.1f}%)", fontsize=10)
    most = summary["most_used"][:20]
    ax2.barh(range(len(most))[::-1], [m["count"] for m in most], color="#3b6ea5")
    ax2.set_yticks(range(len(most))[::-1], [m["word"] for m in most], fontsize=9)
    ax2.set_xlabel("label slots")
    least = ", ".join(m["word"] for m in summary["least_used"][:6])
    ax2.set_title(f"most used words\nleast used: {least}", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, out / "word_usage.png")
    written.append("word_usage.png")
    return written


# --- main --------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a label cache directory (extract_labels --out) or a config (.py)")
    p.add_argument("--out", required=True, help="output directory (refused if it holds files, unless --force)")
    p.add_argument("--force", action="store_true", help="write into an --out that already holds files")
    p.add_argument("--images", nargs="+", help="with a config: label these images instead of the config's dataset")
    p.add_argument("--word-list", help="with a cache: the word list file it was made with (default: the manifest's)")
    p.add_argument("--check-config", help="with a cache: refuse it unless it matches this config's labeler")
    p.add_argument("--batch-size", type=int, default=64, help="samples per read/labeler batch (default 64)")
    p.add_argument("--top-words", type=int, default=20, help="most/least used words listed (default 20)")
    p.add_argument("--bins", type=int, default=60, help="histogram bins in the plots (default 60)")
    p.add_argument("--device", default="cpu", help="labeler device, with a config (default cpu)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE", help="override config entries")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    for name in ("batch_size", "top_words", "bins"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    src = Path(args.source)
    failures: list[dict] = []
    if src.is_dir():
        expect = None
        if args.check_config:
            ccfg = Config.fromfile(args.check_config)
            if args.cfg_options:
                ccfg.merge_from_dict(args.cfg_options)
            expect = build_labeler(ccfg, args.device).fingerprint()
        cache = LabelCache(src, expect=expect)
        out = check_out_dir(args.out, args.force)
        words, words_from = words_of_cache(cache.manifest, args.word_list)
        stats = LabelStats(cache.num_words, cache.top_n)
        batches = labels_from_cache(cache, args.batch_size)
        fp = cache.manifest["labeler"]
        weights = fp.get("pretrained") or "RANDOM weights"
        title = f"label cache {src.name}: {fp.get('model_name')} ({weights}), word list {words_from}"
        source = dict(kind="label_cache", path=str(src), num_failed_in_cache=len(cache.failures))
    elif src.is_file():
        cfg = Config.fromfile(str(src))
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        out = check_out_dir(args.out, args.force)
        labeler, batches = labels_from_config(cfg, args.images, args.device, args.batch_size, failures)
        words = list(labeler.words)
        stats = LabelStats(len(words), labeler.top_n)
        loaded = getattr(labeler, "loaded", None)
        weights = (loaded.pretrained if loaded is not None else None) or "RANDOM weights"
        title = f"config {src.name}: {loaded.model_name if loaded is not None else type(labeler).__name__} ({weights})"
        source = dict(kind="config", path=str(src), images=args.images)
    else:
        raise ValueError(f"source {args.source!r} does not exist (expected a label cache directory or a config file)")

    for labels in batches:
        stats.update(labels)
    if stats.num_images == 0:
        raise ValueError(f"no image was labelled from {args.source!r} ({len(failures)} failed)")
    summary = stats.summary(words, args.top_words)
    summary.update(source=source, skipped=failures, num_skipped=len(failures))
    summary["plots"] = plot_all(stats, summary, out, title, args.bins)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"{PROG}: {stats.num_images} images, {stats.num_labels} labels, utilisation "
          f"{100 * summary['utilisation']:.1f}% of {stats.num_words} words -> {out}")
    if failures:
        print(f"{PROG}: skipped {len(failures)} unreadable image(s), listed in {out / 'summary.json'}", file=sys.stderr)
    return summary


cli = console(main)  # the console script alignkit-analyze-labels

if __name__ == "__main__":
    main()
