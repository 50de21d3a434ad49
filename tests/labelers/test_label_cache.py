"""The label-cache format and ``LabelCache``, on hand-made ``PatchLabels`` (no labeler, no images).

A cache is assembled here from the format's own primitives (``write_shard``,
the manifest) the way ``tools/extract_labels.py`` does, so these tests pin the
reader and the on-disk format; the tool end to end is in test_extract_labels.py.
"""
import json
import re
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import load_file

from alignkit.labelers.cache import (
    FAILURES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    SHARD_DIR,
    LabelCache,
    LabelCacheError,
    decode_words,
    diff_fields,
    encode_scores,
    encode_words,
    read_shard_header,
    run_key,
    shard_name,
    word_dtype_for,
    write_json_atomic,
    write_jsonl_atomic,
    write_shard,
)
from alignkit.structures import PatchLabels

FINGERPRINT = {
    "backend": "open_clip",
    "model_name": "tiny",
    "pretrained": "sha256:abc",
    "word_list": {"sha256": "def", "size": 7},
    "prompt": "{}",
    "negate": True,
    "top_n": 3,
    "min_score": 0.0,
    "image_size": 32,
    "transform": "Resize(32)+CenterCrop(32)+Normalize",
}


def random_labels(b, grid, k, num_words, seed, empty_frac=0.3) -> PatchLabels:
    """PatchLabels with random ids (some empty) and descending scores, from one seed."""
    g = torch.Generator().manual_seed(seed)
    p = grid[0] * grid[1]
    words = torch.randint(0, num_words, (b, p, k), generator=g)
    scores = torch.rand(b, p, k, generator=g).sort(dim=-1, descending=True).values
    empty = torch.rand(b, p, k, generator=g) < empty_frac
    return PatchLabels(words.masked_fill(empty, -1), scores.masked_fill(empty, 0.0), grid)


def make_cache(root, labels: PatchLabels, ids, shard_size, num_words, fingerprint=FINGERPRINT, failures=()):
    """Write a complete cache of ``labels`` (row i has id ids[i]) split into shards of ``shard_size``.

    ``failures``: ids of extra samples whose image "failed"; they make one more
    shard holding no labels (N = 0), as the tool writes when every image of a
    shard fails.
    """
    (root / SHARD_DIR).mkdir(parents=True)
    b, _, k = labels.words.shape
    dtype = word_dtype_for(num_words)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "complete": False,
        "labeler": fingerprint,
        "extraction": {"precision": "float32"},
        "data": {"ann_file": "a.json", "ann_sha256": "0" * 64, "image_folder": "img"},
        "layout": {
            "shard_size": shard_size,
            "num_shards": -(-b // shard_size) + bool(failures),
            "grid": list(labels.grid),
            "top_n": k,
            "num_words": num_words,
            "word_dtype": "uint16" if dtype.itemsize == 2 else "int32",
            "empty_word": 65535 if dtype.itemsize == 2 else -1,
            "score_dtype": "float16",
        },
    }
    manifest["run_key"] = run_key(manifest)
    shards = []
    fails = [{"row": 1000 + i, "id": f, "image": f"{f}.jpg", "path": f"img/{f}.jpg", "reason": "file not found"}
             for i, f in enumerate(failures)]
    for s in range(manifest["layout"]["num_shards"]):
        lo, hi = min(b, s * shard_size), min(b, (s + 1) * shard_size)
        shard_fails = fails if lo == hi else []
        meta = {"run_key": manifest["run_key"], "shard": s, "first_row": lo, "last_row": hi - 1,
                "ids": list(ids[lo:hi]), "failures": shard_fails}
        digest, size = write_shard(
            root / shard_name(s),
            encode_words(labels.words[lo:hi], num_words),
            encode_scores(labels.scores[lo:hi]),
            meta,
        )
        shards.append({"file": shard_name(s), "sha256": digest, "bytes": size, "num_labelled": hi - lo})
    write_jsonl_atomic(root / FAILURES, fails)
    manifest.update(complete=True, shards=shards)
    write_json_atomic(root / MANIFEST, manifest)
    return manifest


# --- word/score encoding -----------------------------------------------------
def test_word_dtype_boundary():
    # uint16 keeps 65535 for the empty slot, so it serves while every id (< V) is <= 65534.
    assert word_dtype_for(65535) == np.uint16
    assert word_dtype_for(65536) == np.int32
    with pytest.raises(ValueError, match="num_words"):
        word_dtype_for(0)


@pytest.mark.parametrize("num_words", [1, 41242, 65535, 65536, 200_000])
def test_encode_decode_words_round_trip_at_edges(num_words):
    words = torch.tensor([[[-1, 0, num_words - 1]]])
    arr = encode_words(words, num_words)
    assert arr.dtype == word_dtype_for(num_words)
    if arr.dtype == np.uint16:
        assert arr[0, 0, 0] == 65535  # the documented on-disk empty slot
    assert torch.equal(decode_words(arr), words)


def test_encode_words_refuses_out_of_range_ids():
    with pytest.raises(ValueError, match=r"ids in \[-1, 7\].*\[0, 7\)"):
        encode_words(torch.tensor([[[-1, 7]]]), 7)
    with pytest.raises(ValueError, match=r"-2"):
        encode_words(torch.tensor([[[-2, 0]]]), 7)


def test_encode_scores_refuses_non_finite_and_overflow():
    with pytest.raises(ValueError, match="NaN or inf"):
        encode_scores(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="float16"):
        encode_scores(torch.tensor([1e6]))


# --- round trip ----------------------------------------------------------------
@given(
    b=st.integers(1, 7),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    k=st.integers(1, 4),
    big_vocab=st.booleans(),
    shard_size=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_any_order(tmp_path_factory, b, h, w, k, big_vocab, shard_size, seed):
    num_words = 70_000 if big_vocab else 50
    labels = random_labels(b, (h, w), k, num_words, seed)
    ids = [f"s{i:03d}" for i in range(b)]
    root = tmp_path_factory.mktemp("cache")
    make_cache(root, labels, ids, shard_size, num_words)
    cache = LabelCache(root, expect=FINGERPRINT, verify=True)
    assert len(cache) == b and cache.grid == (h, w) and cache.top_n == k

    order = torch.randperm(b, generator=torch.Generator().manual_seed(seed)).tolist()
    order = order + order[:2]  # repeated ids are allowed in a batch
    got = cache.get_batch([ids[i] for i in order])
    assert got.words.dtype == torch.long and got.scores.dtype == torch.float32 and got.grid == (h, w)
    assert torch.equal(got.words, labels.words[order])
    # scores are stored as float16: exact equality with the fp16 rounding of the input
    assert torch.equal(got.scores.double(), labels.scores[order].half().double())
    one = cache[ids[order[0]]]
    assert one.batch_size == 1 and torch.equal(one.words, labels.words[order[:1]])


def test_int_ids_are_looked_up_as_strings(tmp_path):
    labels = random_labels(3, (2, 2), 2, 10, seed=0)
    make_cache(tmp_path, labels, ["7", "8", "9"], 2, 10)
    cache = LabelCache(tmp_path)
    assert torch.equal(cache[8].words, labels.words[1:2])
    assert 9 in cache and "10" not in cache


def test_shard_is_standard_safetensors_and_byte_stable(tmp_path):
    labels = random_labels(4, (2, 3), 3, 100, seed=1)
    a, b = tmp_path / "a", tmp_path / "b"
    make_cache(a, labels, list("abcd"), 4, 100)
    make_cache(b, labels, list("abcd"), 4, 100)
    assert (a / shard_name(0)).read_bytes() == (b / shard_name(0)).read_bytes()
    assert (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes()
    # the safetensors library reads what we wrote by hand
    loaded = load_file(a / shard_name(0))
    assert loaded["words"].dtype == np.uint16 and loaded["scores"].dtype == np.float16
    assert torch.equal(decode_words(loaded["words"]), labels.words)
    _, meta, _ = read_shard_header(a / shard_name(0))
    assert meta["ids"] == list("abcd")


def test_empty_shard_of_only_failures(tmp_path):
    labels = random_labels(1, (1, 2), 2, 5, seed=2)
    manifest = make_cache(tmp_path, labels, ["x"], 1, 5, failures=["bad"])
    _, meta, _ = read_shard_header(tmp_path / shard_name(1))
    assert meta["ids"] == [] and load_file(tmp_path / shard_name(1))["words"].shape == (0, 2, 2)
    cache = LabelCache(tmp_path, verify=True)
    assert len(cache) == 1 and manifest["layout"]["num_shards"] == 2
    assert torch.equal(cache["x"].words, labels.words)
    with pytest.raises(KeyError, match=r"'bad'.*failures\.jsonl"):
        cache["bad"]


# --- refusals ------------------------------------------------------------------
def test_failed_and_unknown_ids_raise_keyerror_naming_them(tmp_path):
    labels = random_labels(2, (2, 2), 2, 10, seed=3)
    make_cache(tmp_path, labels, ["ok1", "ok2"], 2, 10, failures=["broken"])
    cache = LabelCache(tmp_path)
    with pytest.raises(KeyError, match=r"'broken'.*failed.*failures\.jsonl.*file not found"):
        cache.get_batch(["ok1", "broken"])
    with pytest.raises(KeyError, match=r"'nope' is not in the label cache"):
        cache["nope"]
    with pytest.raises(ValueError, match="at least one"):
        cache.get_batch([])


@pytest.mark.parametrize(
    "field, value",
    [("prompt", "a photo of {}"), ("word_list.sha256", "other"), ("top_n", 5),
     ("transform", "Resize(64)"), ("new_field", 1)],
)
def test_mismatched_fingerprint_is_refused_naming_the_field(tmp_path, field, value):
    make_cache(tmp_path, random_labels(1, (1, 1), 3, 7, seed=4), ["a"], 1, 7)
    other = json.loads(json.dumps(FINGERPRINT))
    node, *rest = field.split(".")
    if rest:
        other[node][rest[0]] = value
    else:
        other[node] = value
    with pytest.raises(ValueError, match=r"differing field\(s\): " + re.escape(field) + ": cache has"):
        LabelCache(tmp_path, expect=other)

    class FakeLabeler:  # only .fingerprint() is consulted by check()
        def fingerprint(self):
            return other

    with pytest.raises(ValueError, match=re.escape(field)):
        LabelCache(tmp_path).check(FakeLabeler())


def test_matching_fingerprint_with_tuples_is_accepted(tmp_path):
    fp = dict(FINGERPRINT, image_size=(32, 32))
    make_cache(tmp_path, random_labels(1, (1, 1), 3, 7, seed=5), ["a"], 1, 7, fingerprint=fp)
    LabelCache(tmp_path, expect=dict(fp))  # (32, 32) vs [32, 32] after JSON: equal


def test_diff_fields_reports_every_difference():
    diffs = diff_fields({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 4}, "e": 5})
    assert diffs == [("b.c", 2, 4), ("b.d", 3, "<missing>"), ("e", "<missing>", 5)]


def test_corrupt_shard_checksum_is_detected(tmp_path):
    labels = random_labels(3, (2, 2), 2, 10, seed=6)
    make_cache(tmp_path, labels, ["a", "b", "c"], 2, 10)
    path = tmp_path / shard_name(1)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # flip bits of the last score: same size, valid header
    path.write_bytes(bytes(raw))
    LabelCache(tmp_path)  # opening checks sizes only
    with pytest.raises(ValueError, match=r"shard-00001.*corrupt: sha256"):
        LabelCache(tmp_path, verify=True)
    with pytest.raises(ValueError, match=r"shard-00001.*corrupt"):
        LabelCache(tmp_path).verify()


def test_truncated_or_missing_shard_is_detected_on_open(tmp_path):
    make_cache(tmp_path, random_labels(3, (2, 2), 2, 10, seed=7), ["a", "b", "c"], 2, 10)
    path = tmp_path / shard_name(0)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"shard-00000.*bytes, the manifest says"):
        LabelCache(tmp_path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="shard-00000.*missing"):
        LabelCache(tmp_path)


def test_read_shard_header_rejects_garbage(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_shard_header(bad)
    bad.write_bytes(struct.pack("<Q", 4) + b"{}  ")
    with pytest.raises(ValueError, match="unreadable header"):
        read_shard_header(bad)


def test_incomplete_or_foreign_manifest_is_refused(tmp_path):
    manifest = make_cache(tmp_path, random_labels(1, (1, 1), 3, 7, seed=8), ["a"], 1, 7)
    write_json_atomic(tmp_path / MANIFEST, dict(manifest, complete=False))
    with pytest.raises(ValueError, match="incomplete.*run the same extract_labels command"):
        LabelCache(tmp_path)
    write_json_atomic(tmp_path / MANIFEST, dict(manifest, version=99))
    with pytest.raises(ValueError, match="version 99"):
        LabelCache(tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        LabelCache(tmp_path / "nowhere")


def test_shard_from_another_run_is_refused(tmp_path):
    manifest = make_cache(tmp_path, random_labels(1, (1, 1), 3, 7, seed=9), ["a"], 1, 7)
    write_json_atomic(tmp_path / MANIFEST, dict(manifest, run_key="f" * 64))
    with pytest.raises(ValueError, match="different run"):
        LabelCache(tmp_path)


def test_cache_reads_in_forked_dataloader_workers(tmp_path):
    labels = random_labels(6, (2, 2), 2, 10, seed=10)
    ids = [f"i{n}" for n in range(6)]
    make_cache(tmp_path, labels, ids, 4, 10)
    cache = LabelCache(tmp_path)
    cache.get_batch(ids[:1])  # maps a shard in the parent before the fork

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return cache[ids[i]].words[0]

    loader = torch.utils.data.DataLoader(DS(), batch_size=3, num_workers=2,
                                         multiprocessing_context="fork")
    assert torch.equal(torch.cat(list(loader)), labels.words)


# --- corrupt values in a shard of the right size ---------------------------------------
def _poke(path, field, flat_index, value: np.ndarray) -> None:
    """Overwrite element ``flat_index`` of ``field`` in a shard file in place (same size, valid header)."""
    tensors, _, start = read_shard_header(path)
    offset = start + tensors[field]["data_offsets"][0] + flat_index * value.itemsize
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(value.tobytes())


@pytest.mark.parametrize(
    "num_words, field, value, shown",
    [
        (50, "words", np.array(50, "<u2"), "50"),  # = V: one past the word table
        (50, "words", np.array(65534, "<u2"), "65534"),  # a flipped high byte
        (70_000, "words", np.array(-2, "<i4"), "-2"),  # int32 ids: below the empty slot -1
        (70_000, "words", np.array(70_000, "<i4"), "70000"),
        (50, "scores", np.array(np.nan, "<f2"), "nan"),
        (50, "scores", np.array(-np.inf, "<f2"), "-inf"),
    ],
)
def test_a_corrupt_value_is_named_on_the_shards_first_read(tmp_path, num_words, field, value, shown):
    grid, k = (2, 3), 2
    labels = random_labels(5, grid, k, num_words, seed=3)
    ids = [f"s{i}" for i in range(5)]
    make_cache(tmp_path, labels, ids, shard_size=2, num_words=num_words)  # shards: s0 s1 | s2 s3 | s4
    # sample s3 = row 1 of shard 1, patch 4, slot 1
    _poke(tmp_path / shard_name(1), field, (1 * 6 + 4) * k + 1, value)
    cache = LabelCache(tmp_path)  # sizes, headers and run keys are all fine: opening cannot tell
    assert torch.equal(cache.get_batch(["s0", "s4"]).words, labels.words[[0, 4]])  # other shards read fine
    with pytest.raises(LabelCacheError) as err:
        cache["s2"]  # a good sample of the bad shard: the shard is checked as a whole, once
    msg = str(err.value)
    assert "shard-00001.safetensors is corrupt" in msg
    assert f"{field}[1, 4, 1] (sample 's3', patch 4, slot 1) is {shown}" in msg
    with pytest.raises(LabelCacheError, match="shard-00001"):
        LabelCache(tmp_path, verify=True)  # and the checksum disagrees too
