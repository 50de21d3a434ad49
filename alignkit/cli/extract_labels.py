"""``tools/extract_labels.py CONFIG --out DIR``: label a LLaVA-format dataset once, offline.

Runs the config's labeler over every image of ``label_data.ann_file`` and writes
the label cache (``alignkit.labelers.cache``: format, ``LabelCacheWriter``,
``LabelCache``). This module keeps the command line, the images, the
distribution over ranks and the progress report; the writer owns the files. The config needs two entries::

    labeler = dict(type='CLIPTopNLabeler', model_name='ViT-L-14-336', pretrained='openai', ...)
    label_data = dict(
        ann_file='data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json',   # required
        image_folder='data/LLaVA-Pretrain/images',                   # required
        batch_size=64,     # images per labeler forward pass
        num_workers=4,     # DataLoader decoding processes (0: decode in the main process)
        shard_size=4096,   # image rows per shard (the unit of resume and of rank splitting)
        # optional, as in training (LLaVADataset): allow_outside_root=False, max_image_pixels, max_image_aspect
    )

Guarantees:

- **Deterministic order.** Shard ``i`` covers image rows ``[i*shard_size,
  (i+1)*shard_size)`` in file order, whatever the rank count or resume point.
- **Resumable.** A shard is written to a temp name and renamed when complete; the
  manifest is replaced atomically. Rerunning the same command skips the shards
  that exist (and recomputes any whose bytes differ from a recorded checksum), so
  a killed run finishes with output byte-identical to an uninterrupted one.
- **Data-parallel.** Under ``torchrun`` rank ``r`` takes shards ``i % world == r``;
  rank 0 writes ``failures.jsonl`` and the final manifest after a barrier.
- **Images as in training.** Opened by ``alignkit.datasets.image_io.open_image``
  with the same rules (16-bit and alpha converted, bounded pixels and aspect,
  paths confined to ``image_folder``); a failure's reason is training's skip reason.
- **No silent drops.** A missing or unreadable image is skipped, warned about,
  written to ``failures.jsonl`` with its path and reason and counted in the
  summary; rows without ``"image"`` (text-only) are counted as "no image".
- **Exit status.** An annotation file without a single image row is an error
  (nothing is written). When fewer than ``--min-success`` (default 0.9) of the
  images could be labelled, the cache is written but marked rejected (training
  refuses it) and the exit status is 1; rerun with a lower ``--min-success``
  to accept it (the shards are reused).
- **Progress.** A tqdm bar on a terminal; in logs (SLURM) timestamped lines
  with images/s and ETA, one per shard and one at least every ``--log-interval`` s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from torch.utils.data import DataLoader

from alignkit.cli import console
from alignkit.cli.common import LabelDataSettings, LlavaImageDataset, collate_images, load_rows
from alignkit.labelers.cache import FAILURES, LabelCacheWriter, ShardRecord, new_manifest, sha256_file
from alignkit.labelers.cache.writer import rejection
from alignkit.registry import LABELERS

PROG = "extract_labels"
# Below this fraction of images labelled, the run fails: beyond 10 % failures the cause is almost
# always a wrong image_folder or a missing sub-folder, not a few broken files.
MIN_SUCCESS = 0.9


# --- distribution ------------------------------------------------------------
def _init_distributed() -> tuple[int, int, bool]:
    """``(rank, world, created)``; joins the torchrun group when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    # gloo even on GPUs: ranks only exchange barriers and a few small Python
    # objects, never GPU tensors. The long timeout covers the end-of-run barrier,
    # where a resumed run's ranks can have very different amounts left to do.
    dist.init_process_group("gloo", timeout=timedelta(hours=48))
    return dist.get_rank(), dist.get_world_size(), True


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _resolve_device(arg: str | None, world: int) -> torch.device:
    name = arg or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# --- progress ------------------------------------------------------------------
class Progress:
    """What a person watching, or a SLURM log, sees of a rank's labelling.

    On a terminal (rank 0, unless ``--no-progress``): a tqdm bar with images/s
    and ETA. Otherwise: timestamped lines on stderr, one per written shard and
    one at least every ``interval`` seconds in between, each with the count done,
    the rate and the ETA of this rank's remaining images.
    """

    def __init__(self, total: int, rank: int, world: int, bar: bool, interval: float) -> None:
        self.total, self.done, self.rank = total, 0, rank
        self.interval = interval
        self.t0 = self.t_last = time.monotonic()
        self.bar = None
        if bar:
            from tqdm import tqdm  # only on a terminal

            desc = "labels" if world == 1 else f"labels (rank 0 of {world})"
            self.bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, smoothing=0.05)

    def _line(self, what: str) -> None:
        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "unknown"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        pct = 100.0 * self.done / self.total if self.total else 100.0
        print(
            f"{stamp} {PROG}: [rank {self.rank}] {what}{self.done}/{self.total} images ({pct:.1f}%), "
            f"{rate:.1f} images/s, elapsed {_clock(elapsed)}, ETA {eta}",
            file=sys.stderr,
            flush=True,
        )
        self.t_last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.t_last >= self.interval:
            self._line("")

    def shard_written(self, index: int, num_shards: int, labelled: int, failed: int) -> None:
        if self.bar is None:
            self._line(f"shard {index + 1}/{num_shards}: {labelled} labelled, {failed} failed; ")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


# --- the run -----------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Write the offline patch-label cache of a LLaVA-format dataset.")
    p.add_argument("config", help="mmengine config with `labeler` and `label_data`")
    p.add_argument("--out", required=True, help="cache directory (created; rerun the same command to resume)")
    p.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override config entries, e.g. label_data.batch_size=32 labeler.top_n=5",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--min-success",
        type=float,
        default=MIN_SUCCESS,
        metavar="FRACTION",
        help=f"fail (exit 1, cache marked rejected) when fewer than this fraction of the images could be "
        f"labelled (default {MIN_SUCCESS}; 0 accepts any number, even none)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is also off when not a tty)")
    p.add_argument(
        "--log-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="without a progress bar: a timestamped progress line at least this often (default 60)",
    )
    p.add_argument(
        "--stop-after-shards",
        type=int,
        default=None,
        metavar="N",
        help="debugging: stop (as if killed) after writing N new shards on this rank, before the manifest is final",
    )
    args = p.parse_args(argv)
    if args.stop_after_shards is not None and args.stop_after_shards < 1:
        raise ValueError(f"--stop-after-shards must be >= 1, got {args.stop_after_shards}")
    if not 0.0 <= args.min_success <= 1.0:
        raise ValueError(f"--min-success must be a fraction in [0, 1], got {args.min_success}")
    if not args.log_interval >= 0:
        raise ValueError(f"--log-interval must be >= 0 seconds, got {args.log_interval}")
    return args


def _build_labeler(cfg: Config, device: torch.device):
    """The config's labeler, placed on this rank's device (``device`` is set by the tool)."""
    labeler_cfg = dict(cfg.labeler)
    labeler_cfg["device"] = str(device)
    labeler = LABELERS.build(labeler_cfg)
    for attr in ("transform", "grid", "num_words", "fingerprint", "encode_patches", "label"):
        if not hasattr(labeler, attr):
            raise ValueError(
                f"labeler {type(labeler).__name__} has no `{attr}`; extract_labels needs the labeler contract"
            )
    return labeler


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 when at least ``--min-success`` of the images were labelled, else 1."""
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if "labeler" not in cfg:
        raise ValueError(f"config {args.config} has no `labeler`; expected e.g. dict(type='CLIPTopNLabeler', ...)")
    data = LabelDataSettings.from_config(cfg)

    rank, world, created = _init_distributed()
    try:
        return _run(args, cfg, data, rank, world)
    finally:
        if created:
            dist.destroy_process_group()


def _run(args, cfg: Config, data: LabelDataSettings, rank: int, world: int) -> int:
    t_start = time.monotonic()
    device = _resolve_device(args.device, world)
    rows, num_rows, no_image = load_rows(data.ann_file, data.image_folder)
    if not rows:  # an empty "complete" cache would train on nothing without a word
        raise ValueError(
            f"{data.ann_file}: nothing to label: {num_rows} row(s), {no_image} of them without an image"
        )
    # Rank 0 first: it builds (and caches on disk) the text bank the others then load,
    # instead of every rank computing it and racing to write the same cache file.
    if rank == 0:
        labeler = _build_labeler(cfg, device)
    _barrier(world)
    if rank != 0:
        labeler = _build_labeler(cfg, device)
    manifest = new_manifest(
        labeler.fingerprint(),
        num_words=int(labeler.num_words),
        grid=labeler.grid,
        precision="bfloat16-autocast" if device.type == "cuda" else "float32",
        data={
            "ann_file": data.ann_file,
            "ann_sha256": sha256_file(data.ann_file),
            "image_folder": data.image_folder,
            "num_rows": num_rows,
            "num_images": len(rows),
            "num_no_image": no_image,
            "image_rules": data.image_rules,
        },
        shard_size=data.shard_size,
        num_images=len(rows),
    )
    out = Path(args.out)
    writer = LabelCacheWriter(out, manifest, log=lambda msg: print(f"{PROG}: {msg}", file=sys.stderr))
    writer.open(rank, barrier=lambda: _barrier(world))

    # This rank's shards; those already on disk (from an interrupted run) are kept.
    done: dict[int, ShardRecord] = {}
    todo: list[int] = []
    for i in range(rank, writer.num_shards, world):
        kept = writer.reusable(i, rows[i * data.shard_size].row)
        if kept is None:
            todo.append(i)
        else:
            done[i] = kept
    counts = {"reused": len(done), "written": 0}
    if todo:
        stopped = _label_shards(labeler, device, data, rows, writer, todo, done, args, rank, world)
        counts["written"] = len(done) - counts["reused"]
        if stopped:
            print(
                f"{PROG}: [rank {rank}] stopped after {args.stop_after_shards} new shard(s) "
                "(--stop-after-shards); run the same command without it to finish",
                file=sys.stderr,
            )
            return 0

    # Every rank gets every rank's shard records; rank 0 writes the final manifest.
    gathered = [(done, counts)]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, (done, counts))
    records = {i: rec for r_done, _ in gathered for i, rec in r_done.items()}
    if rank != 0:  # rank 0 writes and reports; every rank exits with the same status
        labelled = sum(len(rec.meta["ids"]) for rec in records.values())
        failed = sum(len(rec.meta["failures"]) for rec in records.values())
        return 0 if rejection(labelled, failed, args.min_success) is None else 1
    m = writer.finish(records, min_success=args.min_success)
    s = m["summary"]
    written, reused = (sum(c[key] for _, c in gathered) for key in ("written", "reused"))
    size = _human_bytes(sum(rec["bytes"] for rec in m["shards"]))
    print(f"{PROG}: {'done' if m['complete'] else 'REJECTED'}: {out} ({time.monotonic() - t_start:.1f} s)")
    print(f"  rows:     {num_rows} ({len(rows)} with an image, {no_image} without an image: skipped)")
    print(
        f"  labelled: {s['num_labelled']} images in {len(m['shards'])} shards "
        f"({written} written now, {reused} reused), {size}"
    )
    print(f"  failed:   {s['num_failed']} images" + (f" (listed in {out / FAILURES})" if s["num_failed"] else ""))
    if not m["complete"]:
        first = next(iter(json.loads(line) for line in (out / FAILURES).read_text(encoding="utf-8").splitlines()), None)
        hint = f"; first failure: {first['path']}: {first['reason']}" if first else ""
        print(
            f"{PROG}: error: {m['rejected']}{hint}. Fix the data (image_folder?) and rerun the same command, "
            "or rerun it with a lower --min-success to accept this cache.",
            file=sys.stderr,
        )
        return 1
    return 0


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _label_shards(labeler, device, data, rows, writer, todo, done, args, rank, world) -> bool:
    """Label and write the shards ``todo`` (adding their records to ``done``); True if stopped early."""
    # Batches never straddle shards, so a shard is written as soon as its last batch is in.
    batches: list[list[int]] = []
    batch_shard: list[int] = []
    for i in todo:
        idx = list(range(i * data.shard_size, min(len(rows), (i + 1) * data.shard_size)))
        for b in range(0, len(idx), data.batch_size):
            batches.append(idx[b : b + data.batch_size])
            batch_shard.append(i)
    last_batch = {s: n for n, s in enumerate(batch_shard)}
    loader = DataLoader(
        LlavaImageDataset(rows, labeler.transform, **data.image_rules),
        batch_sampler=batches,
        num_workers=data.num_workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
    )
    bar = rank == 0 and not args.no_progress and sys.stderr.isatty()
    progress = Progress(sum(len(b) for b in batches), rank, world, bar, args.log_interval)
    written, shard = 0, None
    try:
        for n, (index, images, failed) in enumerate(loader):
            s = batch_shard[n]
            if shard is None:
                first, last = s * data.shard_size, min(len(rows), (s + 1) * data.shard_size) - 1
                shard = writer.shard(s, rows[first].row, rows[last].row)
            for j, reason in failed:
                r = rows[j]
                print(f"{PROG}: skipping row {r.row} (id {r.id!r}): {r.path}: {reason}", file=sys.stderr)
                shard.fail({"row": r.row, "id": r.id, "image": r.image, "path": r.path, "reason": reason})
            if images is not None:
                with torch.inference_mode():
                    # Autocast covers the tower only: the top-n search keeps the
                    # labeler's own precision policy (e.g. bf16 nominate, fp32 rescore).
                    with _autocast(device):
                        dense = labeler.encode_patches(images.to(device, non_blocking=True))
                    labels = labeler.label(dense)
                shard.add(labels, [rows[j].id for j in index.tolist()])
            progress.update(len(index) + len(failed))
            if last_batch[s] != n:
                continue
            done[s] = shard.write()
            progress.shard_written(s, writer.num_shards, len(shard.ids), len(shard.failures))
            shard, written = None, written + 1
            if args.stop_after_shards is not None and written >= args.stop_after_shards:
                return True
    finally:
        progress.close()
    return False


def _human_bytes(n: int) -> str:
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:.1f} {unit}"


cli = console(main)  # the console script alignkit-extract-labels

if __name__ == "__main__":
    sys.exit(main())
