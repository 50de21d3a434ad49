"""``LabelCache``: ``PatchLabels`` by sample id from a label-cache directory (format: ``format.py``).

Opening a cache checks what is cheap to check for every shard (size, run key,
layout); the first read of a shard in a process checks its values (word ids in
range, finite scores: one vectorised pass over the memory map); ``verify()``
hashes every byte. Shards are read through ``np.memmap``, so a random sample id
costs one small read, not a shard load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from alignkit.labelers.cache.format import (
    _ST_NAMES,
    FAILURES,
    UINT16_EMPTY,
    LabelCacheError,
    _memmap,
    decode_words,
    diff_fields,
    format_diff,
    read_manifest,
    read_shard_header,
    sha256_file,
)
from alignkit.structures import EMPTY_WORD, PatchLabels

# Samples checked at once on a shard's first read: bounds the temporaries to a
# few MB whatever the shard size (512 × 576 patches × 10 slots).
_CHECK_ROWS = 512
_F16_EXPONENT = 0x7C00  # the exponent bits of a float16; all set = inf or NaN


class LabelCache:
    """``PatchLabels`` by sample id, from a directory written by ``tools/extract_labels.py``.

    Args:
        root: the cache directory (``--out`` of the tool).
        expect: a labeler ``fingerprint()`` the cache must have been made with;
            any differing field raises ``LabelCacheError`` naming it. ``None`` skips
            the check (call ``check(labeler)`` later, or ``check_label_cache``
            with a model).
        verify: also check every shard's sha256 against the manifest now. Opening
            always checks each shard's size and run key (cheap); the full hash
            reads every byte, so it is opt-in (or call ``verify()``).

    ``cache[sample_id]`` is a ``PatchLabels`` with B = 1; ``cache.get_batch(ids)``
    stacks several (in the order given). Ids are compared as strings (the LLaVA
    JSON ``id`` passed through ``str``). An id whose image failed raises
    ``KeyError`` saying it is listed in ``failures.jsonl``. A shard whose word
    ids fall outside ``[0, V)`` (or the empty slot) or whose scores are not
    finite raises ``LabelCacheError`` on its first read, naming the shard, the
    field, the first bad index (sample id, patch, slot) and value.

    Open the cache before forking DataLoader workers or inside them, both work:
    memory maps are (re)opened per process.
    """

    def __init__(self, root: str | os.PathLike, expect: Mapping | None = None, verify: bool = False) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if self.manifest.get("rejected"):
            raise LabelCacheError(
                f"label cache {self.root} was rejected by extract_labels: {self.manifest['rejected']}"
            )
        if not self.manifest.get("complete"):
            raise LabelCacheError(
                f"label cache {self.root} is incomplete (its extraction was interrupted); "
                "run the same extract_labels command again to finish it"
            )
        layout = self.manifest["layout"]
        self.grid: tuple[int, int] = tuple(layout["grid"])
        self.top_n: int = int(layout["top_n"])
        self.num_words: int = int(layout["num_words"])
        self._word_dtype = np.dtype(layout["word_dtype"]).newbyteorder("<")
        if expect is not None:
            self._check_fingerprint(expect)

        key = self.manifest["run_key"]
        self._shards: list[dict] = self.manifest["shards"]
        self._entries: list[tuple[Path, dict, int]] = []
        ids: list[str] = []
        shard_of: list[np.ndarray] = []
        self.failures: dict[str, dict] = {}
        for s, rec in enumerate(self._shards):
            path = self.root / rec["file"]
            if not path.is_file():
                raise FileNotFoundError(f"label cache {self.root}: shard {rec['file']} is missing")
            size = path.stat().st_size
            if size != rec["bytes"]:
                raise LabelCacheError(
                    f"label cache {self.root}: shard {rec['file']} has {size} bytes, the manifest says "
                    f"{rec['bytes']} (corrupt or truncated; delete it and rerun extract_labels to rebuild it)"
                )
            tensors, meta, start = read_shard_header(path)
            if meta.get("run_key") != key:
                raise LabelCacheError(f"label cache {self.root}: shard {rec['file']} was written by a different run")
            if tensors["words"]["dtype"] != _ST_NAMES[self._word_dtype] or tensors["words"]["shape"][1:] != [
                self.grid[0] * self.grid[1],
                self.top_n,
            ]:
                raise LabelCacheError(
                    f"label cache {self.root}: shard {rec['file']} does not match the manifest's layout"
                )
            self._entries.append((path, tensors, start))
            ids.extend(meta["ids"])
            shard_of.append(np.full(len(meta["ids"]), s, dtype=np.int32))
            for fail in meta["failures"]:
                self.failures[str(fail["id"])] = fail
        if verify:
            self.verify()

        # Sorted numpy arrays instead of a dict: ~20 MB for LLaVA-Pretrain, shared
        # copy-on-write by forked DataLoader workers without refcount churn.
        all_ids = np.array(ids, dtype=str) if ids else np.zeros(0, dtype="<U1")
        shard_idx = np.concatenate(shard_of) if shard_of else np.zeros(0, np.int32)
        pos = np.concatenate([np.arange(len(x), dtype=np.int32) for x in shard_of]) if shard_of else shard_idx
        order = np.argsort(all_ids, kind="stable")
        self._ids = all_ids[order]
        self._shard_idx = shard_idx[order]
        self._pos = pos[order]
        if len(self._ids) > 1 and bool((self._ids[1:] == self._ids[:-1]).any()):
            dup = self._ids[1:][self._ids[1:] == self._ids[:-1]][0]
            raise LabelCacheError(f"label cache {self.root}: sample id {dup!r} appears in more than one shard")
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._pid = os.getpid()

    # -- checks ---------------------------------------------------------------
    @property
    def fingerprint(self) -> dict:
        """The fingerprint of the labeler that made the cache (from the manifest)."""
        return self.manifest["labeler"]

    def _check_fingerprint(self, expect: Mapping) -> None:
        diffs = diff_fields(self.manifest["labeler"], expect)
        if diffs:
            raise LabelCacheError(
                f"label cache {self.root} was made by a different labeler/transform; differing field(s): "
                + format_diff(diffs, "cache has", "labeler has")
            )

    def check(self, labeler) -> "LabelCache":
        """Raise ``LabelCacheError`` naming each field where ``labeler.fingerprint()`` differs."""
        self._check_fingerprint(labeler.fingerprint())
        return self

    def verify(self) -> "LabelCache":
        """Hash every shard; ``LabelCacheError`` naming the first whose sha256 differs from the manifest."""
        for rec in self._shards:
            digest = sha256_file(self.root / rec["file"])
            if digest != rec["sha256"]:
                raise LabelCacheError(
                    f"label cache {self.root}: shard {rec['file']} is corrupt: sha256 {digest} != manifest "
                    f"{rec['sha256']} (delete it and rerun extract_labels with the same command to rebuild it)"
                )
        return self

    def _sample_at(self, s: int, n: int) -> str:
        hit = np.flatnonzero((self._shard_idx == s) & (self._pos == n))
        return str(self._ids[hit[0]]) if len(hit) else "?"

    def _check_values(self, s: int, words: np.ndarray, scores: np.ndarray) -> None:
        """``LabelCacheError`` naming the first out-of-range word id or non-finite score of shard ``s``.

        A same-size corruption (flipped bytes) passes the cheap open-time checks;
        without this it would surface mid-run as an ``IndexError`` in the word
        table, or as a NaN loss.
        """
        empty = int(UINT16_EMPTY) if words.dtype == np.dtype("<u2") else EMPTY_WORD
        for lo in range(0, len(words), _CHECK_ROWS):
            w, sc = words[lo : lo + _CHECK_ROWS], scores[lo : lo + _CHECK_ROWS]
            if not w.size:
                continue
            # Fast path, integer reductions only (numpy's float16 arithmetic is emulated, ~50x
            # slower): uint16 ids + 1 wrap the empty slot 65535 to 0, so every id is good iff the
            # largest is <= V; a float16 is NaN or inf iff its 5 exponent bits are all set.
            ids_ok = int((w + np.uint16(1)).max()) <= self.num_words if empty == int(UINT16_EMPTY) else (
                int(w.min()) >= EMPTY_WORD and int(w.max()) < self.num_words)
            exponent = sc.view("<u2") & np.uint16(_F16_EXPONENT)
            if ids_ok and int(exponent.max()) != _F16_EXPONENT:
                continue
            bad_w = ((w < 0) | (w >= self.num_words)) & (w != empty)
            for field, bad, arr, expected in (
                ("words", bad_w, w, f"an id in [0, {self.num_words}) or {empty} (empty slot)"),
                ("scores", exponent == _F16_EXPONENT, sc, "a finite score"),
            ):
                if bad.any():
                    n, p, k = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
                    raise LabelCacheError(
                        f"label cache {self.root}: shard {self._entries[s][0].name} is corrupt: {field}"
                        f"[{lo + n}, {p}, {k}] (sample {self._sample_at(s, lo + n)!r}, patch {p}, slot {k}) is "
                        f"{arr[n, p, k].item()!r}, expected {expected}; delete the shard and rerun the same "
                        "extract_labels command to rebuild it"
                    )

    # -- reading --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, sample_id) -> bool:
        i = np.searchsorted(self._ids, str(sample_id))
        return bool(i < len(self._ids) and self._ids[i] == str(sample_id))

    @property
    def ids(self) -> list[str]:
        """All labelled sample ids (sorted as strings)."""
        return self._ids.tolist()

    def _arrays(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if os.getpid() != self._pid:  # a forked worker: map the files anew (the parent checked its own maps)
            self._maps, self._pid = {}, os.getpid()
        if s not in self._maps:
            path, tensors, start = self._entries[s]
            words, scores = _memmap(path, tensors["words"], start), _memmap(path, tensors["scores"], start)
            self._check_values(s, words, scores)
            self._maps[s] = (words, scores)
        return self._maps[s]

    def _locate(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        q = np.array(ids, dtype=str) if ids else np.zeros(0, dtype="<U1")
        i = np.searchsorted(self._ids, q)
        found = i < len(self._ids)
        found[found] = self._ids[i[found]] == q[found]
        if not found.all():
            sid = ids[int(np.flatnonzero(~found)[0])]
            if sid in self.failures:
                f = self.failures[sid]
                raise KeyError(
                    f"sample id {sid!r} has no labels: its image failed during extraction and is listed in "
                    f"{self.root / FAILURES} ({f['path']}: {f['reason']})"
                )
            raise KeyError(f"sample id {sid!r} is not in the label cache {self.root} ({len(self)} labelled samples)")
        return self._shard_idx[i], self._pos[i]

    def get_batch(self, ids) -> PatchLabels:
        """``PatchLabels`` (B = len(ids)) in the order of ``ids``; words Long, scores float32."""
        ids = [str(x) for x in ids]
        if not ids:
            raise ValueError("get_batch needs at least one sample id, got an empty list")
        shard, pos = self._locate(ids)
        p, k = self.grid[0] * self.grid[1], self.top_n
        words = np.empty((len(ids), p, k), dtype=self._word_dtype)
        scores = np.empty((len(ids), p, k), dtype=np.float16)
        # One fancy-index read per shard touched, not one per sample.
        for s in np.unique(shard):
            rows = np.flatnonzero(shard == s)
            w, sc = self._arrays(int(s))
            words[rows] = w[pos[rows]]
            scores[rows] = sc[pos[rows]]
        return PatchLabels(decode_words(words), torch.from_numpy(scores.astype(np.float32)), self.grid)

    def __getitem__(self, sample_id) -> PatchLabels:
        return self.get_batch([sample_id])

    def __repr__(self) -> str:
        fp = self.manifest["labeler"]
        return (
            f"LabelCache({str(self.root)!r}, samples={len(getattr(self, '_ids', ()))}, "
            f"failed={len(getattr(self, 'failures', ()))}, "
            f"grid={self.grid}, top_n={self.top_n}, num_words={self.num_words}, model={fp.get('model_name')!r})"
        )
