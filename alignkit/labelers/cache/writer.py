"""``LabelCacheWriter``: writes a label-cache directory (format: ``format.py``), resumably.

The order of writes is what makes a cache safe to kill at any moment:

1. ``open()``: the manifest with ``"complete": false`` (a run in progress), or,
   when the directory already holds one, a check that it describes this same
   run (else ``ValueError`` naming the differing fields; nothing is touched).
2. one shard at a time, each through a temp file and a rename
   (``shard(i, ...)`` collects its labels and failures, ``write()`` writes it);
   a shard left by an earlier attempt is kept when ``reusable(i, ...)`` says so.
3. ``finish()``: ``failures.jsonl``, then the manifest with every shard's
   checksum and ``"complete": true`` — or, when too few images were labelled,
   ``"rejected"`` with the reason (``LabelCache`` refuses such a cache).

Shard contents depend only on the rows they cover (the shard's run key, rows,
ids, labels), so a resumed run ends with files byte-identical to an
uninterrupted one, whatever the rank count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from alignkit.labelers.cache.format import (
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
from alignkit.structures import PatchLabels


class ShardRecord(NamedTuple):
    """A shard on disk: its sha256, byte size and metadata (ids, failures, row range)."""

    sha256: str
    bytes: int
    meta: dict


def new_manifest(
    fingerprint: dict,
    *,
    num_words: int,
    grid: Sequence[int],
    precision: str,
    data: dict,
    shard_size: int,
    num_images: int,
) -> dict:
    """The manifest of a run that has not written anything yet (``"complete": false``).

    ``fingerprint``: the labeler's (must hold ``top_n``); ``precision``: how the
    tower ran (``'float32'``, ``'bfloat16-autocast'``); ``data``: what was read
    (annotation file path and sha256, image folder, row counts).
    """
    if "top_n" not in fingerprint:
        raise ValueError(f"labeler.fingerprint() has no 'top_n' (keys: {sorted(fingerprint)})")
    word_dtype = word_dtype_for(int(num_words))
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "complete": False,
        "labeler": fingerprint,
        # bf16 autocast on GPU gives (slightly) different scores than fp32 on CPU:
        # a resumed run must not mix the two in one cache.
        "extraction": {"precision": precision},
        "data": dict(data),
        "layout": {
            "shard_size": shard_size,
            "num_shards": -(-num_images // shard_size),
            "grid": [int(g) for g in grid],
            "top_n": int(fingerprint["top_n"]),
            "num_words": int(num_words),
            "word_dtype": "uint16" if word_dtype.itemsize == 2 else "int32",
            "empty_word": 65535 if word_dtype.itemsize == 2 else -1,
            "score_dtype": "float16",
        },
    }
    manifest["run_key"] = run_key(manifest)
    return manifest


class ShardBuffer:
    """The labels, ids and failures of one shard, in row order, until ``write()``."""

    def __init__(self, writer: "LabelCacheWriter", index: int, first_row: int, last_row: int) -> None:
        self.writer, self.index = writer, index
        self.first_row, self.last_row = first_row, last_row
        self.ids: list[str] = []
        self.failures: list[dict] = []
        self._words: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def add(self, labels: PatchLabels, ids: Sequence[str]) -> None:
        """Append labelled images (B = len(ids)); refuses a shape or grid other than the layout's."""
        layout = self.writer.layout
        p, k = layout["grid"][0] * layout["grid"][1], layout["top_n"]
        if tuple(labels.words.shape) != (len(ids), p, k) or list(labels.grid) != layout["grid"]:
            raise ValueError(
                f"labeler returned words {tuple(labels.words.shape)} on grid {labels.grid}; "
                f"expected {(len(ids), p, k)} on grid {tuple(layout['grid'])}"
            )
        self._words.append(encode_words(labels.words, layout["num_words"]))
        self._scores.append(encode_scores(labels.scores))
        self.ids.extend(ids)

    def fail(self, failure: dict) -> None:
        """Record an image that could not be labelled (``{"row", "id", "image", "path", "reason"}``)."""
        self.failures.append(failure)

    def write(self) -> ShardRecord:
        """Write the shard atomically (byte-stable) and return its record."""
        layout = self.writer.layout
        meta = {
            "run_key": self.writer.key,
            "shard": self.index,
            "first_row": self.first_row,
            "last_row": self.last_row,
            "ids": self.ids,
            "failures": self.failures,
        }
        empty = np.zeros((0, layout["grid"][0] * layout["grid"][1], layout["top_n"]))
        words = np.concatenate(self._words) if self._words else empty.astype(word_dtype_for(layout["num_words"]))
        scores = np.concatenate(self._scores) if self._scores else empty.astype("<f2")
        digest, size = write_shard(self.writer.out / shard_name(self.index), words, scores, meta)
        return ShardRecord(digest, size, meta)


class LabelCacheWriter:
    """Writes the cache of one run (``manifest`` from :func:`new_manifest`) into ``out``.

    Several processes may write one cache (each its own shards); ``open`` then
    takes a ``barrier`` callable and only ``rank`` 0 writes the manifest, and
    ``finish`` is called once, by rank 0, with every rank's records.
    ``log`` receives one line per notable event (a shard being rewritten).
    """

    def __init__(self, out: str | Path, manifest: dict, log: Callable[[str], None] = lambda msg: None) -> None:
        self.out = Path(out)
        self.manifest = manifest
        self.layout = manifest["layout"]
        self.key = manifest["run_key"]
        self.log = log
        self._recorded: dict[str, str] = {}

    @property
    def num_shards(self) -> int:
        return self.layout["num_shards"]

    def open(self, rank: int = 0, barrier: Callable[[], None] = lambda: None) -> None:
        """Create ``out``, or check that it holds this same run (``ValueError`` naming what differs)."""
        (self.out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        if (self.out / MANIFEST).is_file():
            old = read_manifest(self.out)
            diffs = diff_fields(run_spec(old), run_spec(self.manifest))
            if diffs:
                raise ValueError(
                    f"{self.out} holds a label cache from a different run; differing field(s): "
                    + format_diff(diffs, "existing", "this run")
                    + ". Use another --out (or delete it) to start afresh."
                )
            self._recorded = {s["file"]: s["sha256"] for s in old.get("shards", [])}
        barrier()  # every rank has read the old manifest before rank 0 may write one
        if rank == 0 and not (self.out / MANIFEST).is_file():
            write_json_atomic(self.out / MANIFEST, self.manifest)  # "complete": false marks a run in progress
        barrier()

    def reusable(self, index: int, first_row: int) -> ShardRecord | None:
        """The record of shard ``index`` if an earlier attempt left it whole and from this run, else None."""
        path = self.out / shard_name(index)
        if not path.is_file():
            return None
        try:
            _, meta, _ = read_shard_header(path)
        except ValueError as e:
            self.log(f"rewriting shard {index}: {e}")
            return None
        if meta.get("run_key") != self.key or meta.get("shard") != index or meta.get("first_row") != first_row:
            self.log(f"rewriting shard {index}: it was written by a different run")
            return None
        digest = sha256_file(path)
        recorded = self._recorded.get(shard_name(index))
        if recorded is not None and digest != recorded:
            self.log(f"rewriting shard {index}: sha256 differs from the manifest (corrupt)")
            return None
        return ShardRecord(digest, path.stat().st_size, meta)

    def shard(self, index: int, first_row: int, last_row: int) -> ShardBuffer:
        """An empty buffer for shard ``index`` (JSON rows ``first_row..last_row``)."""
        return ShardBuffer(self, index, first_row, last_row)

    def finish(self, records: dict[int, ShardRecord], min_success: float = 0.0) -> dict:
        """After every shard is on disk: ``failures.jsonl``, then the final manifest (returned).

        The manifest is marked complete when at least ``min_success`` of the
        images were labelled; otherwise it records ``"rejected"`` with the reason
        and stays incomplete, so that nothing trains on it by accident.
        """
        shards = [_manifest_entry(i, records[i]) for i in range(self.num_shards)]
        failures = [f for i in range(self.num_shards) for f in records[i].meta["failures"]]
        stale = [self.out / f"{MANIFEST}.tmp", self.out / f"{FAILURES}.tmp",
                 *(self.out / SHARD_DIR).glob("shard-*.safetensors.tmp")]
        for leftover in (f for f in stale if f.exists()):
            leftover.unlink()  # temp files of a killed run, already redone under their final name
        write_jsonl_atomic(self.out / FAILURES, failures)
        labelled = sum(rec["num_labelled"] for rec in shards)
        summary = {
            "num_labelled": labelled,
            "num_failed": len(failures),
            "num_no_image": self.manifest["data"].get("num_no_image", 0),
        }
        rejected = rejection(labelled, len(failures), min_success, self.out / FAILURES)
        self.manifest.update(complete=rejected is None, shards=shards, summary=summary)
        if rejected is not None:
            self.manifest["rejected"] = rejected
        else:
            self.manifest.pop("rejected", None)
        write_json_atomic(self.out / MANIFEST, self.manifest)  # last: "complete" only once everything else is there
        return self.manifest


def rejection(labelled: int, failed: int, min_success: float, failures_file: str | Path = FAILURES) -> str | None:
    """Why a run that labelled ``labelled`` of ``labelled + failed`` images is not accepted, or None."""
    attempted = labelled + failed
    if attempted and labelled >= min_success * attempted:
        return None
    share = f" ({labelled / attempted:.1%})" if attempted else ""
    return (
        f"only {labelled} of {attempted} images were labelled{share}, fewer than --min-success {min_success:g}; "
        f"the failures are listed in {failures_file}"
    )


def _manifest_entry(index: int, record: ShardRecord) -> dict:
    return {
        "file": shard_name(index),
        "sha256": record.sha256,
        "bytes": record.bytes,
        "first_row": record.meta["first_row"],
        "last_row": record.meta["last_row"],
        "num_labelled": len(record.meta["ids"]),
        "num_failed": len(record.meta["failures"]),
    }
