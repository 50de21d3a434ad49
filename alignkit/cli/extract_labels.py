"""``tools/extract_labels.py CONFIG --out DIR``: label a LLaVA-format dataset once, offline.

Runs the config's labeler over every image of ``label_data.ann_file`` and writes
the label cache that ``alignkit.labelers.cache.LabelCache`` reads (format: see
that module). The config needs two entries::

    labeler = dict(type='CLIPTopNLabeler', model_name='ViT-L-14-336', pretrained='openai', ...)
    label_data = dict(
        ann_file='data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json',   # required
        image_folder='data/LLaVA-Pretrain/images',                   # required
        batch_size=64,     # images per labeler forward pass
        num_workers=4,     # DataLoader decoding processes (0: decode in the main process)
        shard_size=4096,   # image rows per shard (the unit of resume and of rank splitting)
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
- **No silent drops.** A missing or unreadable image is skipped, warned about,
  written to ``failures.jsonl`` with its path and reason and counted in the
  summary; rows without ``"image"`` (text-only) are counted as "no image".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from torch.utils.data import DataLoader

from alignkit.cli.common import ImageRow, LabelDataSettings, LlavaImageDataset, collate_images, load_rows
from alignkit.labelers.cache import (
    FAILURES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    SHARD_DIR,
    diff_fields,
    encode_scores,
    encode_words,
    format_diff,
    read_manifest,
    read_shard_header,
    run_key,
    run_spec,
    sha256_file,
    shard_name,
    word_dtype_for,
    write_json_atomic,
    write_jsonl_atomic,
    write_shard,
)
from alignkit.registry import LABELERS

PROG = "extract_labels"


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


# --- the run -----------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description="Write the offline patch-label cache of a LLaVA-format dataset.")
    p.add_argument("config", help="mmengine config with `labeler` and `label_data`")
    p.add_argument("--out", required=True, help="cache directory (created; rerun the same command to resume)")
    p.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override config entries, e.g. label_data.batch_size=32 labeler.top_n=5",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is also off when not a tty)")
    p.add_argument(
        "--stop-after-shards",
        type=int,
        default=None,
        metavar="N",
        help="debugging: stop (as if killed) after writing N new shards on this rank, before the manifest is final",
    )
    return p.parse_args(argv)


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


def _build_manifest(labeler, data: LabelDataSettings, num_rows: int, rows: list[ImageRow], no_image: int, device):
    fingerprint = labeler.fingerprint()
    if "top_n" not in fingerprint:
        raise ValueError(f"labeler.fingerprint() has no 'top_n' (keys: {sorted(fingerprint)})")
    num_words = int(labeler.num_words)
    word_dtype = word_dtype_for(num_words)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "complete": False,
        "labeler": fingerprint,
        # bf16 autocast on GPU gives (slightly) different scores than fp32 on CPU:
        # a resumed run must not mix the two in one cache.
        "extraction": {"precision": "bfloat16-autocast" if device.type == "cuda" else "float32"},
        "data": {
            "ann_file": data.ann_file,
            "ann_sha256": sha256_file(data.ann_file),
            "image_folder": data.image_folder,
            "num_rows": num_rows,
            "num_images": len(rows),
            "num_no_image": no_image,
        },
        "layout": {
            "shard_size": data.shard_size,
            "num_shards": -(-len(rows) // data.shard_size),
            "grid": [int(g) for g in labeler.grid],
            "top_n": int(fingerprint["top_n"]),
            "num_words": num_words,
            "word_dtype": "uint16" if word_dtype.itemsize == 2 else "int32",
            "empty_word": 65535 if word_dtype.itemsize == 2 else -1,
            "score_dtype": "float16",
        },
    }
    manifest["run_key"] = run_key(manifest)
    return manifest


def _reusable(out: Path, index: int, rows: list[ImageRow], key: str, recorded_sha: str | None):
    """The ``(sha256, bytes, meta)`` of an existing shard ``index`` if it can be kept, else ``None``."""
    path = out / shard_name(index)
    if not path.is_file():
        return None
    try:
        _, meta, _ = read_shard_header(path)
    except ValueError as e:
        print(f"{PROG}: rewriting shard {index}: {e}", file=sys.stderr)
        return None
    if meta.get("run_key") != key or meta.get("shard") != index or meta.get("first_row") != rows[0].row:
        print(f"{PROG}: rewriting shard {index}: it was written by a different run", file=sys.stderr)
        return None
    digest = sha256_file(path)
    if recorded_sha is not None and digest != recorded_sha:
        print(f"{PROG}: rewriting shard {index}: sha256 differs from the manifest (corrupt)", file=sys.stderr)
        return None
    return digest, path.stat().st_size, meta


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stop_after_shards is not None and args.stop_after_shards < 1:
        raise ValueError(f"--stop-after-shards must be >= 1, got {args.stop_after_shards}")
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
    # Rank 0 first: it builds (and caches on disk) the text bank the others then load,
    # instead of every rank computing it and racing to write the same cache file.
    if rank == 0:
        labeler = _build_labeler(cfg, device)
    _barrier(world)
    if rank != 0:
        labeler = _build_labeler(cfg, device)
    manifest = _build_manifest(labeler, data, num_rows, rows, no_image, device)
    out = Path(args.out)
    recorded = _open_out(out, manifest, rank, world)

    # This rank's shards; those already on disk (from an interrupted run) are kept.
    shard_size, key = data.shard_size, manifest["run_key"]
    done: dict[int, tuple[str, int, dict]] = {}
    todo: list[int] = []
    for i in range(rank, manifest["layout"]["num_shards"], world):
        kept = _reusable(out, i, rows[i * shard_size : (i + 1) * shard_size], key, recorded.get(shard_name(i)))
        if kept is None:
            todo.append(i)
        else:
            done[i] = kept
    counts = {"reused": len(done), "written": 0}
    if todo:
        stopped = _label_shards(args, labeler, device, data, rows, manifest, todo, out, rank, world, done)
        counts["written"] = len(done) - counts["reused"]
        if stopped:
            print(
                f"{PROG}: [rank {rank}] stopped after {args.stop_after_shards} new shard(s) "
                "(--stop-after-shards); run the same command without it to finish",
                file=sys.stderr,
            )
            return 0

    # Rank 0 gathers every rank's shard records and writes the final manifest.
    records = {i: _shard_record(i, digest, size, meta) for i, (digest, size, meta) in done.items()}
    gathered = [(records, counts)]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, (records, counts))
    if rank != 0:
        return 0
    for r_records, _ in gathered:
        records.update(r_records)
    _finish(out, manifest, records, no_image)
    m = manifest["summary"]
    written, reused = (sum(c[key] for _, c in gathered) for key in ("written", "reused"))
    size = _human_bytes(sum(rec["bytes"] for rec in manifest["shards"]))
    print(f"{PROG}: done: {out} ({time.monotonic() - t_start:.1f} s)")
    print(f"  rows:     {num_rows} ({len(rows)} with an image, {no_image} without an image: skipped)")
    print(
        f"  labelled: {m['num_labelled']} images in {len(manifest['shards'])} shards "
        f"({written} written now, {reused} reused), {size}"
    )
    print(f"  failed:   {m['num_failed']} images" + (f" (listed in {out / FAILURES})" if m["num_failed"] else ""))
    return 0


def _open_out(out: Path, manifest: dict, rank: int, world: int) -> dict[str, str]:
    """Create ``out`` or check that it holds this same run; the shard checksums it records."""
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    recorded: dict[str, str] = {}
    if (out / MANIFEST).is_file():
        old = read_manifest(out)
        diffs = diff_fields(run_spec(old), run_spec(manifest))
        if diffs:
            raise ValueError(
                f"{out} holds a label cache from a different run; differing field(s): "
                + format_diff(diffs, "existing", "this run")
                + ". Use another --out (or delete it) to start afresh."
            )
        recorded = {s["file"]: s["sha256"] for s in old.get("shards", [])}
    _barrier(world)  # every rank has read the old manifest before rank 0 may write one
    if rank == 0 and not (out / MANIFEST).is_file():
        write_json_atomic(out / MANIFEST, manifest)  # "complete": false marks a run in progress
    _barrier(world)
    return recorded


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _label_shards(args, labeler, device, data, rows, manifest, todo, out, rank, world, done) -> bool:
    """Label and write the shards ``todo`` (adding them to ``done``); True if stopped early."""
    layout, key = manifest["layout"], manifest["run_key"]
    p, k = layout["grid"][0] * layout["grid"][1], layout["top_n"]
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
        LlavaImageDataset(rows, labeler.transform),
        batch_sampler=batches,
        num_workers=data.num_workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
    )
    # A bar on rank 0 when someone watches; one line per shard (every rank) in logs.
    interactive = not args.no_progress and sys.stderr.isatty()
    bar = _progress(sum(len(b) for b in batches), world) if interactive and rank == 0 else None
    acc_words: list[np.ndarray] = []
    acc_scores: list[np.ndarray] = []
    acc_ids: list[str] = []
    acc_fail: list[dict] = []
    written, t_shard, n_shard = 0, time.monotonic(), 0
    try:
        for n, (index, images, failed) in enumerate(loader):
            for j, reason in failed:
                r = rows[j]
                print(f"{PROG}: skipping row {r.row} (id {r.id!r}): {r.path}: {reason}", file=sys.stderr)
                acc_fail.append({"row": r.row, "id": r.id, "image": r.image, "path": r.path, "reason": reason})
            if images is not None:
                with torch.inference_mode():
                    # Autocast covers the tower only: the top-n search keeps the
                    # labeler's own precision policy (e.g. bf16 nominate, fp32 rescore).
                    with _autocast(device):
                        dense = labeler.encode_patches(images.to(device, non_blocking=True))
                    labels = labeler.label(dense)
                if tuple(labels.words.shape) != (len(index), p, k) or list(labels.grid) != layout["grid"]:
                    raise ValueError(
                        f"labeler returned words {tuple(labels.words.shape)} on grid {labels.grid}; "
                        f"expected {(len(index), p, k)} on grid {tuple(layout['grid'])}"
                    )
                acc_words.append(encode_words(labels.words, layout["num_words"]))
                acc_scores.append(encode_scores(labels.scores))
                acc_ids.extend(rows[j].id for j in index.tolist())
            n_shard += len(index) + len(failed)
            if bar is not None:
                bar.update(len(index) + len(failed))
            s = batch_shard[n]
            if last_batch[s] != n:
                continue
            # shard s is complete: write it
            first, last = s * data.shard_size, min(len(rows), (s + 1) * data.shard_size) - 1
            meta = {
                "run_key": key,
                "shard": s,
                "first_row": rows[first].row,
                "last_row": rows[last].row,
                "ids": acc_ids,
                "failures": acc_fail,
            }
            empty = np.zeros((0, p, k))
            words = np.concatenate(acc_words) if acc_words else empty.astype(word_dtype_for(layout["num_words"]))
            scores = np.concatenate(acc_scores) if acc_scores else empty.astype("<f2")
            digest, size = write_shard(out / shard_name(s), words, scores, meta)
            done[s] = (digest, size, meta)
            written += 1
            if not interactive:
                rate = n_shard / max(time.monotonic() - t_shard, 1e-9)
                print(
                    f"{PROG}: [rank {rank}] shard {s + 1}/{layout['num_shards']}: {len(acc_ids)} labelled, "
                    f"{len(acc_fail)} failed, {rate:.1f} images/s",
                    file=sys.stderr,
                )
            acc_words, acc_scores, acc_ids, acc_fail = [], [], [], []
            t_shard, n_shard = time.monotonic(), 0
            if args.stop_after_shards is not None and written >= args.stop_after_shards:
                return True
    finally:
        if bar is not None:
            bar.close()
    return False


def _shard_record(index: int, digest: str, size: int, meta: dict) -> dict:
    return {
        "file": shard_name(index),
        "sha256": digest,
        "bytes": size,
        "first_row": meta["first_row"],
        "last_row": meta["last_row"],
        "num_labelled": len(meta["ids"]),
        "num_failed": len(meta["failures"]),
        "failures": meta["failures"],  # moved to failures.jsonl by _finish
    }


def _finish(out: Path, manifest: dict, records: dict[int, dict], no_image: int) -> None:
    """Rank 0, after every shard is on disk: failures.jsonl, then the complete manifest."""
    shards = [records[i] for i in range(manifest["layout"]["num_shards"])]
    failures = [f for rec in shards for f in rec.pop("failures")]
    stale = [out / f"{MANIFEST}.tmp", out / f"{FAILURES}.tmp", *(out / SHARD_DIR).glob("shard-*.safetensors.tmp")]
    for leftover in (f for f in stale if f.exists()):
        leftover.unlink()  # temp files of a killed run, already redone under their final name
    write_jsonl_atomic(out / FAILURES, failures)
    manifest.update(
        complete=True,
        shards=shards,
        summary={
            "num_labelled": sum(rec["num_labelled"] for rec in shards),
            "num_failed": len(failures),
            "num_no_image": no_image,
        },
    )
    write_json_atomic(out / MANIFEST, manifest)  # last: "complete" only once everything else is there


def _human_bytes(n: int) -> str:
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:.1f} {unit}"


def _progress(total: int, world: int):
    from tqdm import tqdm

    desc = "labels" if world == 1 else f"labels (rank 0 of {world})"
    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, smoothing=0.05)


if __name__ == "__main__":
    sys.exit(main())
