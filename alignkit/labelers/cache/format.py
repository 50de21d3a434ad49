"""The label cache's on-disk format: layout, encodings, shard files and the manifest.

``tools/extract_labels.py`` runs a labeler once over a LLaVA-format dataset and
writes what it produced (``writer.LabelCacheWriter``); training then reads
``PatchLabels`` by sample id (``reader.LabelCache``) instead of running the
labeler's encoder on every step. This module is what both agree on.

Layout of a cache directory::

    OUT/manifest.json                 what produced the labels (see below), written atomically
    OUT/failures.jsonl                one JSON line per image that could not be read
    OUT/shards/shard-00000.safetensors

A shard is a plain safetensors file (readable with ``safetensors.numpy.load_file``)
holding, for the images of ``shard_size`` consecutive image rows of the annotation
file (file order; failed images left out):

- ``words``  (N, P, K): word ids in the smallest type that holds the word list:
  ``uint16`` when V < 65,536, with the empty slot (−1 in ``PatchLabels``) stored
  as 65,535 (no real id reaches it, since ids are < V <= 65,535); otherwise
  ``int32`` with −1 kept as is.
- ``scores`` (N, P, K) float16 (0 in empty slots).
- metadata key ``alignkit``: a JSON string with the run key, the shard index, the
  JSON-row range, the sample ids in order, and the failures of that shard.

The manifest records the labeler's ``fingerprint()`` (backend, encoder, weights,
word list, prompt, transform, top-n, ...), the precision, the annotation file's
sha256, the layout (shard size, grid, K, V, dtypes) and, once the run is
complete, the sha256 and byte size of every shard.

Everything here is pure Python / numpy / torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from alignkit.structures import EMPTY_WORD
from alignkit.utils.io import sha256_file, write_bytes_atomic  # noqa: F401  (sha256_file: part of this API)
from alignkit.utils.validate import check_int

FORMAT_NAME = "alignkit-label-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
SHARD_DIR = "shards"
META_KEY = "alignkit"  # the safetensors metadata key holding a shard's own description
UINT16_EMPTY = np.iinfo(np.uint16).max  # 65535: the empty slot in uint16 shards

# Manifest entries that describe the result of a run, not what it was asked to do;
# they are left out when a restarted run is compared with the one it resumes.
_RESULT_KEYS = ("complete", "shards", "summary", "rejected")
# Where the inputs were found, recorded for the reader but not compared: moving a
# dataset does not change it (its content is pinned by data.ann_sha256).
_LOCATION_KEYS = ("ann_file", "image_folder")

_ST_DTYPES = {"U16": np.dtype("<u2"), "I32": np.dtype("<i4"), "F16": np.dtype("<f2")}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


class LabelCacheError(ValueError):
    """A label cache that cannot be used as it is: named file, field and value.

    Never a per-sample problem: a dataset must let it stop the run rather than
    count it as a skipped sample (every sample of the shard would be "skipped").
    """


# --- word ids ----------------------------------------------------------------
def word_dtype_for(num_words: int) -> np.dtype:
    """The on-disk dtype of word ids for a word list of ``num_words`` words."""
    check_int("num_words", num_words, low=1)
    # uint16 keeps 65535 free for the empty slot only while every id is < 65535.
    return np.dtype("<u2") if num_words < 65536 else np.dtype("<i4")


def encode_words(words: torch.Tensor, num_words: int) -> np.ndarray:
    """Long[..] word ids (−1 empty) -> the on-disk array (see the module docstring)."""
    dtype = word_dtype_for(num_words)
    w = words.detach().to("cpu", torch.long)
    if w.numel():
        lo, hi = int(w.min()), int(w.max())
        if lo < EMPTY_WORD or hi >= num_words:
            raise ValueError(
                f"words has ids in [{lo}, {hi}]; expected ids in [0, {num_words}) or {EMPTY_WORD} for an empty slot"
            )
    arr = w.numpy()
    if dtype == np.dtype("<u2"):
        arr = np.where(arr == EMPTY_WORD, UINT16_EMPTY, arr)
    return np.ascontiguousarray(arr.astype(dtype))


def decode_words(arr: np.ndarray) -> torch.Tensor:
    """The on-disk word array -> Long[..] with −1 in empty slots."""
    out = torch.from_numpy(np.asarray(arr).astype(np.int64))
    if arr.dtype == np.dtype("<u2"):
        out[out == int(UINT16_EMPTY)] = EMPTY_WORD
    return out


def encode_scores(scores: torch.Tensor) -> np.ndarray:
    """Float[..] scores -> float16 (refusing values float16 cannot hold)."""
    s = scores.detach().to("cpu", torch.float32)
    if s.numel() and not bool(torch.isfinite(s).all()):
        raise ValueError("scores contains NaN or inf; refusing to write it to the label cache")
    if s.numel() and float(s.abs().max()) > float(np.finfo(np.float16).max):
        raise ValueError(f"scores has |value| {float(s.abs().max())} beyond float16's range (65504)")
    return np.ascontiguousarray(s.numpy().astype("<f2"))


# --- files -------------------------------------------------------------------
def shard_name(index: int) -> str:
    """Path of shard ``index`` relative to the cache directory."""
    return f"{SHARD_DIR}/shard-{index:05d}.safetensors"


def canonical_json(obj: Any) -> str:
    """One fixed text per value (sorted keys), so equal content gives equal bytes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2) + "\n"
    write_bytes_atomic(path, [text.encode("utf-8")])


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> None:
    write_bytes_atomic(path, [(canonical_json(r) + "\n").encode("utf-8") for r in records])


def write_shard(
    path: str | os.PathLike, words: np.ndarray, scores: np.ndarray, meta: Mapping[str, Any]
) -> tuple[str, int]:
    """Write one shard atomically as a safetensors file with byte-stable content; ``(sha256, bytes)``.

    The header is written here (not by the safetensors library) so that the same
    labels always give the same bytes: sorted keys, one metadata entry, fixed
    tensor order. That is what makes a resumed run byte-identical to a fresh one.
    """
    if words.shape != scores.shape or words.ndim != 3:
        raise ValueError(f"words {words.shape} and scores {scores.shape} must share one (N, P, K) shape")
    if words.dtype not in (np.dtype("<u2"), np.dtype("<i4")):
        raise ValueError(f"words dtype must be uint16 or int32, got {words.dtype}")
    if scores.dtype != np.dtype("<f2"):
        raise ValueError(f"scores dtype must be float16, got {scores.dtype}")
    words = np.ascontiguousarray(words)
    scores = np.ascontiguousarray(scores)
    header = {
        "__metadata__": {META_KEY: canonical_json(dict(meta))},
        "words": {"dtype": _ST_NAMES[words.dtype], "shape": list(words.shape), "data_offsets": [0, words.nbytes]},
        "scores": {
            "dtype": "F16",
            "shape": list(scores.shape),
            "data_offsets": [words.nbytes, words.nbytes + scores.nbytes],
        },
    }
    head = canonical_json(header).encode("utf-8")
    head += b" " * (-len(head) % 8)  # safetensors pads the header to 8 bytes with spaces
    return write_bytes_atomic(path, [struct.pack("<Q", len(head)), head, words.tobytes(), scores.tobytes()])


def read_shard_header(path: str | os.PathLike) -> tuple[dict, dict, int]:
    """``(tensors, meta, data_start)`` of a shard; ``ValueError`` if it is not one.

    ``tensors`` maps a name to its safetensors entry; ``meta`` is the shard's own
    description (run key, ids, failures).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"shard {path} is truncated ({size} bytes): no safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise ValueError(f"shard {path} is truncated: header of {n} bytes in a file of {size}")
        try:
            header = json.loads(f.read(n))
            meta = json.loads(header["__metadata__"][META_KEY])
            tensors = {k: header[k] for k in ("words", "scores")}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"shard {path} has an unreadable header ({type(e).__name__}: {e})") from None
    end = max(t["data_offsets"][1] for t in tensors.values())
    if 8 + n + end != size:
        raise ValueError(f"shard {path} has {size} bytes but its header describes {8 + n + end}")
    return tensors, meta, 8 + n


def _memmap(path: Path, entry: dict, data_start: int) -> np.ndarray:
    dtype = _ST_DTYPES[entry["dtype"]]
    shape = tuple(entry["shape"])
    begin = entry["data_offsets"][0]
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)  # np.memmap refuses zero-length maps
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)


# --- manifest comparison -----------------------------------------------------
def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def diff_fields(recorded: Mapping, current: Mapping) -> list[tuple[str, Any, Any]]:
    """``[(dotted.field, recorded value, current value)]`` for every field that differs.

    Both sides go through JSON first, so a tuple and a list compare equal, as they
    would after a round trip through the manifest. A missing field shows as
    ``'<missing>'``.
    """
    a = _flatten(json.loads(json.dumps(recorded)))
    b = _flatten(json.loads(json.dumps(current)))
    missing = "<missing>"
    return [
        (k, a.get(k, missing), b.get(k, missing))
        for k in sorted(a.keys() | b.keys())
        if a.get(k, missing) != b.get(k, missing)
    ]


def format_diff(diffs: list[tuple[str, Any, Any]], left: str, right: str) -> str:
    return "; ".join(f"{field}: {left} {a!r}, {right} {b!r}" for field, a, b in diffs)


def run_spec(manifest: Mapping) -> dict:
    """The part of a manifest a restarted run must agree with (inputs, not results)."""
    spec = {k: v for k, v in manifest.items() if k not in _RESULT_KEYS}
    if "data" in spec:
        spec["data"] = {k: v for k, v in spec["data"].items() if k not in _LOCATION_KEYS}
    return spec


def run_key(manifest: Mapping) -> str:
    """sha256 of the run spec: stamped into every shard so a shard names its run."""
    spec = run_spec(manifest)
    spec.pop("run_key", None)
    return hashlib.sha256(canonical_json(spec).encode("utf-8")).hexdigest()


def read_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no label cache at {root}: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not an alignkit label-cache manifest (format != {FORMAT_NAME!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {manifest.get('version')!r}; this alignkit reads version {FORMAT_VERSION}"
        )
    labeler = manifest.get("labeler")
    if isinstance(labeler, dict) and "backend" not in labeler:
        # Caches written before fingerprints named their backend all came from open_clip.
        labeler["backend"] = "open_clip"
    return manifest


# --- image transforms ----------------------------------------------------------
# "backend": transformers' and open_clip's processors round resized sizes differently (a one-pixel crop shift on
# some images), so a processor naming its backend differs from one that does not (open_clip's).
TRANSFORM_KEYS = ("image_size", "mean", "std", "resize_mode", "interpolation", "pad_to_square", "backend")


def transform_spec(desc: Mapping) -> dict:
    """One comparable description of an image transform (what changes which pixel a patch sees).

    Accepts an image processor's ``fingerprint()`` (``image_size``, ``mean``,
    ``std``, ``resize_mode``, ``interpolation``, ``pad_to_square``) and the
    ``transform`` entry of a labeler fingerprint (open_clip's preprocess config:
    ``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode``, ...; a
    labeler's transform never pads to a square). Keys missing from ``desc`` show
    as ``'<missing>'``, so two incomplete descriptions never compare equal by accident.
    """
    desc = dict(desc)
    if "image_size" not in desc and "size" in desc:
        desc["image_size"] = desc["size"]
        desc.setdefault("pad_to_square", False)
    size = desc.get("image_size", "<missing>")
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = [int(size), int(size)]
    elif isinstance(size, (list, tuple)):
        size = [int(v) for v in size]
    out = {"image_size": size}
    for key in TRANSFORM_KEYS[1:]:
        value = desc.get(key, "<missing>")
        if key in ("mean", "std") and isinstance(value, (list, tuple)):
            value = [float(v) for v in value]
        elif key == "pad_to_square" and value != "<missing>":
            value = bool(value)
        out[key] = value
    return out


