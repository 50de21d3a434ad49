"""``tools/extract_labels.py`` end to end: a tiny LLaVA-format dataset of real photographs.

The labeler is the real ``CLIPTopNLabeler`` on the tiny random-weight open_clip
ViT of ``conftest.py`` (4×4 grid), put in an open_clip ``local-dir`` so that a
subprocess (the two-rank test) builds exactly the same model. The photographs
are scikit-image's public-domain samples, shrunk; the dataset adds a text-only
row, a missing file and a truncated JPEG.
"""
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from alignkit.cli.extract_labels import main
from alignkit.datasets.image_processor import OpenCLIPImageProcessor
from alignkit.labelers.cache import (
    FAILURES,
    MANIFEST,
    LabelCache,
    LabelCacheError,
    check_label_cache,
    read_shard_header,
    shard_name,
)
from alignkit.registry import LABELERS

REPO = Path(__file__).resolve().parents[2]

# (id, skimage sample or None for a text-only row, file name, how it is broken)
ROWS = [
    ("000000001", "astronaut", "00000/astronaut.jpg", None),
    ("000000002", "chelsea", "00000/chelsea.png", None),
    ("text-only", None, None, None),
    ("000000003", None, "00000/missing.jpg", "missing"),
    ("000000004", "coffee", "00001/coffee.jpg", None),
    ("000000005", "chelsea", "00001/truncated.jpg", "truncated"),
    ("000000006", "rocket", "00001/rocket.jpg", None),
    ("000000007", "camera", "00001/camera.png", None),  # grayscale: must come out RGB
    (8, "coins", "00002/coins.jpg", None),  # an int id: looked up as "8"
]
GOOD = [(str(i), f) for i, s, f, broken in ROWS if s is not None and broken is None]
SHARD_SIZE = 3  # 8 image rows -> shards of rows [0,1,3] [4,5,6] [7,8]
# 6 of the 8 images are good: below the tool's default --min-success (0.9), so the tests accept 0.75.
ACCEPT = ("--min-success", "0.75")


def build_dataset(root: Path) -> tuple[Path, Path]:
    folder = root / "images"
    rows = []
    for sid, sample, file, broken in ROWS:
        row = {"id": sid, "conversations": [{"from": "human", "value": "<image>\nDescribe the photo."},
                                            {"from": "gpt", "value": f"a photo ({sample})"}]}
        if file is not None:
            row["image"] = file
        rows.append(row)
        if sample is None:
            continue
        path = folder / file
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(getattr(skdata, sample)())
        img.resize((48, 36)).save(path)  # not square: the labeler's transform resizes and crops
        if broken == "truncated":
            raw = path.read_bytes()
            path.write_bytes(raw[: len(raw) // 2])
    ann = root / "blip_laion_cc_sbu_tiny.json"
    ann.write_text(json.dumps(rows), encoding="utf-8")
    return ann, folder


def make_local_dir(tiny, root: Path, preprocess_cfg=None) -> str:
    """The tiny ViT as an open_clip local-dir (config + weights), buildable from any process."""
    root.mkdir(parents=True, exist_ok=True)
    model_cfg = open_clip.get_model_config(tiny.VIT)
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                            "preprocess_cfg": preprocess_cfg or {}}))
    shutil.copyfile(tiny.weights[tiny.VIT], root / "open_clip_pytorch_model.bin")
    return f"local-dir:{root}"


def write_config(path: Path, labeler: dict, label_data: dict) -> str:
    path.write_text(f"labeler = {labeler!r}\nlabel_data = {label_data!r}\n", encoding="utf-8")
    return str(path)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    """Dataset, config and one uninterrupted reference extraction, shared by the module."""
    root = tmp_path_factory.mktemp("extract")
    ann, folder = build_dataset(root)
    words = root / "words.txt"
    words.write_text("\n".join(tiny.words) + "\n", encoding="utf-8")
    labeler = dict(type="CLIPTopNLabeler", model_name=make_local_dir(tiny, root / "tiny-vit"), word_list=str(words),
                   top_n=3, min_score=0.0, negate=True, prompt="{}", cache_dir=str(root / "text_banks"))
    label_data = dict(ann_file=str(ann), image_folder=str(folder), batch_size=2, num_workers=0,
                      shard_size=SHARD_SIZE)
    config = write_config(root / "labels_tiny.py", labeler, label_data)
    out = root / "reference"
    assert main([config, "--out", str(out), "--device", "cpu", "--no-progress", *ACCEPT]) == 0
    return dict(root=root, ann=ann, folder=folder, words=words, labeler=labeler, label_data=label_data,
                config=config, out=out)


def build_labeler(cfg: dict, **overrides):
    return LABELERS.build(dict(cfg, device="cpu", **overrides))


def run(config, out, *extra) -> int:
    return main([config, "--out", str(out), "--device", "cpu", "--no-progress", *ACCEPT, *extra])


# --- the cache it writes ---------------------------------------------------------
def test_layout_manifest_and_checksums(setup):
    out = setup["out"]
    assert sorted(tree_bytes(out)) == [FAILURES, MANIFEST] + [shard_name(i) for i in range(3)]
    m = json.loads((out / MANIFEST).read_text())
    labeler = build_labeler(setup["labeler"])
    assert m["complete"] is True and m["format"] == "alignkit-label-cache"
    assert m["labeler"] == json.loads(json.dumps(labeler.fingerprint()))
    for field in ("model_name", "weights_sha256", "word_list_sha256", "num_words", "prompt", "top_n", "transform"):
        assert field in m["labeler"]
    assert m["extraction"] == {"precision": "float32"}
    assert m["data"]["ann_sha256"] == hashlib.sha256(setup["ann"].read_bytes()).hexdigest()
    # 9 rows: 8 with an image (2 of them broken), 1 text-only
    assert (m["data"]["num_rows"], m["data"]["num_images"], m["data"]["num_no_image"]) == (9, 8, 1)
    assert m["layout"] == {"shard_size": 3, "num_shards": 3, "grid": [4, 4], "top_n": 3, "num_words": 20,
                           "word_dtype": "uint16", "empty_word": 65535, "score_dtype": "float16"}
    assert m["summary"] == {"num_labelled": 6, "num_failed": 2, "num_no_image": 1}
    for rec in m["shards"]:
        raw = (out / rec["file"]).read_bytes()
        assert rec["sha256"] == hashlib.sha256(raw).hexdigest() and rec["bytes"] == len(raw)
    # shards hold their rows in file order: rows 0,1,(3 missing) | 4,(5 truncated),6 | 7,8
    ids = [read_shard_header(out / shard_name(i))[1]["ids"] for i in range(3)]
    assert ids == [["000000001", "000000002"], ["000000004", "000000006"], ["000000007", "8"]]
    assert [(r["first_row"], r["last_row"], r["num_labelled"], r["num_failed"]) for r in m["shards"]] == [
        (0, 3, 2, 1), (4, 6, 2, 1), (7, 8, 2, 0)]


def test_cache_equals_labeler_run_directly(setup):
    labeler = build_labeler(setup["labeler"])
    cache = LabelCache(setup["out"], expect=labeler.fingerprint(), verify=True)
    assert len(cache) == len(GOOD)
    # Independently: PIL -> RGB -> the labeler's transform -> the labeler, one image at a time.
    direct = []
    for _, file in GOOD:
        with Image.open(setup["folder"] / file) as img:
            x = labeler.transform(img.convert("RGB"))
        direct.append(labeler(x[None]))
    words = torch.cat([d.words for d in direct])
    scores = torch.cat([d.scores for d in direct])
    assert (words >= 0).any() and (words == -1).any()  # both filled and emptied slots are exercised

    got = cache.get_batch([sid for sid, _ in reversed(GOOD)])
    assert got.grid == labeler.grid == (4, 4)
    assert torch.equal(got.words, words.flip(0))
    # stored as float16: within float16's rounding (2^-11 relative) of the fp32 scores
    torch.testing.assert_close(got.scores, scores.flip(0), rtol=2**-11, atol=1e-6)
    one = cache[8]  # int ids are looked up as strings
    assert one.batch_size == 1 and torch.equal(one.words, words[-1:])


def test_failures_are_listed_counted_and_refused(setup, capsys):
    lines = [json.loads(x) for x in (setup["out"] / FAILURES).read_text().splitlines()]
    assert [(f["row"], f["id"], f["image"]) for f in lines] == [
        (3, "000000003", "00000/missing.jpg"), (5, "000000005", "00001/truncated.jpg")]
    assert lines[0]["path"] == os.path.join(str(setup["folder"]), "00000/missing.jpg")
    assert lines[0]["reason"] == "missing_image: does not exist"  # training's skip reasons
    assert re.match(r"unreadable_image: .*truncat", lines[1]["reason"], re.I), lines[1]["reason"]

    cache = LabelCache(setup["out"])
    with pytest.raises(KeyError, match=r"'000000005'.*failures\.jsonl.*truncated\.jpg"):
        cache["000000005"]
    with pytest.raises(KeyError, match="'text-only' is not in the label cache"):
        cache["text-only"]

    # the summary of a run counts them (rerun on a copy: everything is reused)
    copy = setup["root"] / "summary-copy"
    shutil.copytree(setup["out"], copy)
    capsys.readouterr()
    assert run(setup["config"], copy) == 0
    out = capsys.readouterr().out
    assert "9 (8 with an image, 1 without an image: skipped)" in out
    assert "labelled: 6 images in 3 shards (0 written now, 3 reused)" in out
    assert f"failed:   2 images (listed in {copy / FAILURES})" in out


def test_warnings_name_each_failure_and_no_bar_without_tty(setup, tmp_path, capsys):
    assert run(setup["config"], tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "skipping row 3 (id '000000003')" in err and "missing_image: does not exist" in err
    assert "skipping row 5 (id '000000005')" in err
    assert "img/s" not in err  # no tqdm bar: stderr is not a terminal here
    assert "shard 3/3: 2 labelled, 0 failed" in err  # one line per shard instead


def test_progress_bar_on_a_tty(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert run(setup["config"], tmp_path / "a") == 0
    err = capsys.readouterr().err.replace("--no-progress", "")
    assert "img/s" not in err  # --no-progress (passed by run()) wins over the tty
    assert main([setup["config"], "--out", str(tmp_path / "b"), "--device", "cpu", *ACCEPT]) == 0
    err = capsys.readouterr().err
    assert re.search(r"labels: 100%.*8/8.*img/s", err), err


def test_progress_lines_in_logs_have_a_timestamp_rate_and_eta(setup, tmp_path, capsys):
    assert run(setup["config"], tmp_path / "out", "--log-interval", "0") == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "images/s" in x]
    line = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ extract_labels: \[rank 0\] (shard (\d)/3: \d labelled, \d failed; )?"
                      r"(\d)/8 images \(\d+\.\d%\), \d+\.\d images/s, elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d")
    matches = [line.fullmatch(x) for x in lines]
    assert all(matches), lines
    # --log-interval 0: a line after each of the 5 batches (2+1 | 2+1 | 2 images), and one per shard
    assert [m.group(3) for m in matches if m.group(1) is None] == ["2", "3", "5", "6", "8"]
    assert [(m.group(2), m.group(3)) for m in matches if m.group(1)] == [("1", "3"), ("2", "6"), ("3", "8")]


def test_default_min_success_rejects_and_a_rerun_accepting_it_reuses_every_shard(setup, tmp_path, capsys):
    out = tmp_path / "strict"
    # 6 of 8 images labelled < the default 0.9
    assert main([setup["config"], "--out", str(out), "--device", "cpu", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "REJECTED" in captured.out
    assert "error: only 6 of 8 images were labelled (75.0%), fewer than --min-success 0.9" in captured.err
    m = json.loads((out / MANIFEST).read_text())
    assert m["complete"] is False and "only 6 of 8" in m["rejected"]
    with pytest.raises(LabelCacheError, match="rejected by extract_labels: only 6 of 8"):
        LabelCache(out)
    assert run(setup["config"], out) == 0  # --min-success 0.75
    assert "(0 written now, 3 reused)" in capsys.readouterr().out
    assert tree_bytes(out) == tree_bytes(setup["out"])


def test_every_image_failing_exits_1(setup, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    config = _config_with(setup, tmp_path, image_folder=str(tmp_path / "empty"))
    assert run(config, tmp_path / "out", "--min-success", "0.01") == 1
    assert "only 0 of 8 images were labelled (0.0%)" in capsys.readouterr().err
    with pytest.raises(LabelCacheError, match="rejected"):
        LabelCache(tmp_path / "out")


@pytest.mark.parametrize("rows", [[], [{"id": "text", "conversations": []}]])
def test_nothing_to_label_is_an_error_and_writes_nothing(setup, tmp_path, rows):
    with pytest.raises(ValueError, match=rf"nothing to label: {len(rows)} row\(s\), {len(rows)} of them without an image"):
        run(_config_with(setup, tmp_path, rows), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_images_follow_the_rules_of_training(setup, tmp_path):
    """16-bit grayscale labelled as its 8-bit self (not as white); a path out of image_folder and a
    3000x1 strip are counted failures under training's skip reasons; allow_outside_root opts out."""
    folder = tmp_path / "images"
    folder.mkdir()
    g8 = (np.arange(36 * 48).reshape(36, 48) * 7 % 256).astype(np.uint8)
    Image.fromarray(g8.astype(np.uint16) * 257).save(folder / "gray16.png")  # mode I;16: 0..65535
    assert Image.open(folder / "gray16.png").mode in ("I;16", "I")
    Image.fromarray(g8).convert("RGB").save(tmp_path / "outside.png")
    Image.new("RGB", (3000, 1), (200, 10, 10)).save(folder / "strip.png")
    rows = [{"id": "gray16", "image": "gray16.png"}, {"id": "outside", "image": "../outside.png"},
            {"id": "strip", "image": "strip.png"}]
    config = _config_with(setup, tmp_path, rows, image_folder=str(folder))
    assert run(config, tmp_path / "out", "--min-success", "0") == 0
    reasons = {json.loads(x)["id"]: json.loads(x)["reason"] for x in (tmp_path / "out" / FAILURES).read_text().splitlines()}
    assert sorted(reasons) == ["outside", "strip"]
    assert reasons["outside"].startswith("image_outside_root: ") and reasons["strip"].startswith("image_too_large: ")

    labeler = build_labeler(setup["labeler"])
    expected = labeler(labeler.transform(Image.fromarray(g8).convert("RGB"))[None])  # the 8-bit image, directly
    got = LabelCache(tmp_path / "out")["gray16"]
    assert torch.equal(got.words, expected.words)
    torch.testing.assert_close(got.scores, expected.scores, rtol=2**-11, atol=1e-6)

    config = _config_with(setup, tmp_path, rows, image_folder=str(folder), allow_outside_root=True)
    assert run(config, tmp_path / "opted-out", "--min-success", "0") == 0
    assert "outside" in LabelCache(tmp_path / "opted-out")


# --- resume -----------------------------------------------------------------------
def test_killed_run_resumes_to_identical_bytes(setup, tmp_path, capsys):
    out = tmp_path / "resumed"
    assert run(setup["config"], out, "--stop-after-shards", "1") == 0
    assert sorted(tree_bytes(out)) == [MANIFEST, shard_name(0)]
    with pytest.raises(ValueError, match="incomplete"):
        LabelCache(out)
    # What a kill mid-write leaves behind: a partial temp shard, a partial temp manifest.
    ref = setup["out"]
    partial = (ref / shard_name(1)).read_bytes()
    (out / (shard_name(1) + ".tmp")).write_bytes(partial[: len(partial) // 3])
    (out / (shard_name(0) + ".tmp")).write_bytes(partial[:10])  # stale: shard 0 is complete already
    (out / (MANIFEST + ".tmp")).write_bytes((ref / MANIFEST).read_bytes()[:100])
    assert run(setup["config"], out, "--stop-after-shards", "1") == 0  # a second interrupted attempt
    assert run(setup["config"], out) == 0
    assert "(1 written now, 2 reused)" in capsys.readouterr().out
    assert tree_bytes(out) == tree_bytes(ref)


def test_damaged_shard_is_detected_and_rebuilt_by_a_rerun(setup, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(setup["out"], out)
    path = out / shard_name(1)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x55  # a score byte: the file still parses, only the checksum tells
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"shard-00001\.safetensors is corrupt: sha256"):
        LabelCache(out, verify=True)
    assert run(setup["config"], out) == 0
    assert tree_bytes(out) == tree_bytes(setup["out"])
    LabelCache(out, verify=True)


def test_restart_with_another_config_is_refused(setup, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(setup["out"], out)
    with pytest.raises(ValueError, match=r"labeler\.top_n: existing 3, this run 2"):
        run(setup["config"], out, "--cfg-options", "labeler.top_n=2")
    with pytest.raises(ValueError, match=r"layout\.shard_size: existing 3, this run 4"):
        run(setup["config"], out, "--cfg-options", "label_data.shard_size=4")
    assert tree_bytes(out) == tree_bytes(setup["out"])  # nothing was touched


# --- refusing a mismatched labeler ------------------------------------------------
@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(prompt="a photo of {}"), "prompt"),
        (dict(top_n=2), "top_n"),
        (dict(min_score=0.1), "min_score"),
        (dict(negate=False), "negate"),
        ("other_words", "word_list_sha256"),
        ("other_transform", "transform.interpolation"),
    ],
)
def test_mismatched_labeler_is_refused_naming_the_field(setup, tiny, tmp_path, overrides, field):
    if overrides == "other_words":
        other = tmp_path / "words.txt"
        other.write_text("\n".join(tiny.words[:-1] + ["zebra"]) + "\n", encoding="utf-8")
        overrides = dict(word_list=str(other))
    elif overrides == "other_transform":
        # same weights, bilinear instead of bicubic resizing
        overrides = dict(model_name=make_local_dir(tiny, tmp_path / "vit", {"interpolation": "bilinear"}))
    labeler = build_labeler(setup["labeler"], **overrides)
    pattern = r"differing field\(s\):.*\b" + re.escape(field) + r": cache has"
    with pytest.raises(ValueError, match=pattern):
        LabelCache(setup["out"], expect=labeler.fingerprint())
    with pytest.raises(ValueError, match=pattern):
        LabelCache(setup["out"]).check(labeler)
    LabelCache(setup["out"]).check(build_labeler(setup["labeler"]))  # the matching one passes


# --- the cache against the model and the images it feeds --------------------------
def test_the_model_it_was_made_for_passes(setup, tiny):
    labeler = build_labeler(setup["labeler"])
    cache = LabelCache(setup["out"])
    # The tiny ViT's open_clip defaults: 32 px, OpenAI mean/std, shortest-side bicubic resize, centre crop.
    processor = OpenCLIPImageProcessor(image_size=32)
    check_label_cache(cache, labeler=labeler, words=labeler.words, grid=(4, 4), image_processor=processor)
    check_label_cache(cache, words=list(tiny.words), grid=(4, 4))  # labels only from the cache: its word list


def _other_words(tiny, tmp_path, words):
    path = tmp_path / "other.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("case", ["replaced_word", "larger_V", "top_n", "words_only", "grid", "pad_to_square",
                                  "interpolation", "image_size", "backend"])
def test_each_mismatch_is_refused_naming_the_field_and_both_values(setup, tiny, tmp_path, case):
    cache = LabelCache(setup["out"])
    consumer, expect = {}, []
    if case == "replaced_word":  # same V: without the check it trains on wrong words silently
        labeler = build_labeler(setup["labeler"], word_list=_other_words(tiny, tmp_path, tiny.words[:-1] + ["zebra"]))
        consumer = dict(labeler=labeler, words=labeler.words)
        expect = [r"labeler\.word_list_sha256: cache has '[0-9a-f]{64}', model's labeler has '[0-9a-f]{64}'"]
    elif case == "larger_V":  # ids would index a different row; a smaller table would raise IndexError
        labeler = build_labeler(setup["labeler"], word_list=_other_words(tiny, tmp_path, tiny.words + ["zebra"]))
        consumer = dict(labeler=labeler, words=labeler.words)
        expect = ["labeler.num_words: cache has 20, model's labeler has 21",
                  "layout.num_words: cache has 20, model's word table has 21"]
    elif case == "top_n":
        consumer = dict(labeler=build_labeler(setup["labeler"], top_n=2))
        expect = ["labeler.top_n: cache has 3, model's labeler has 2"]
    elif case == "words_only":
        consumer = dict(words=tiny.words[:-1] + ["zebra"])
        expect = [r"labeler\.word_list_sha256: cache has '[0-9a-f]{64}', model's word list has '[0-9a-f]{64}'"]
    elif case == "grid":
        consumer = dict(grid=(2, 2))
        expect = [r"layout\.grid: cache has \[4, 4\], model's vision encoder has \[2, 2\]"]
    elif case in ("pad_to_square", "interpolation", "image_size"):
        value = {"pad_to_square": True, "interpolation": "bilinear", "image_size": 48}[case]
        consumer = dict(image_processor=OpenCLIPImageProcessor(**{"image_size": 32, case: value}))
        expect = {"pad_to_square": ["transform.pad_to_square: cache has False, dataset's image_processor has True"],
                  "interpolation": ["transform.interpolation: cache has 'bicubic', dataset's image_processor has "
                                    "'bilinear'"],
                  "image_size": [r"transform\.image_size: cache has \[32, 32\], dataset's image_processor has "
                                 r"\[48, 48\]"]}[case]
    elif case == "backend":  # the same weights through another library's tower need not label alike
        copy = tmp_path / "cache"
        shutil.copytree(setup["out"], copy)
        m = json.loads((copy / MANIFEST).read_text())
        m["labeler"]["backend"] = "transformers"
        (copy / MANIFEST).write_text(json.dumps(m))
        cache, consumer = LabelCache(copy), dict(labeler=build_labeler(setup["labeler"]))
        expect = ["labeler.backend: cache has 'transformers', model's labeler has 'open_clip'"]
    with pytest.raises(LabelCacheError, match=r"does not match the model, refusing to use its labels") as err:
        check_label_cache(cache, **consumer)
    for pattern in expect:
        assert re.search(pattern if "\\" in pattern else re.escape(pattern), str(err.value)), (pattern, str(err.value))


def test_a_cache_from_before_backends_reads_as_open_clip(setup, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(setup["out"], copy)
    m = json.loads((copy / MANIFEST).read_text())
    del m["labeler"]["backend"]
    (copy / MANIFEST).write_text(json.dumps(m))
    check_label_cache(LabelCache(copy), labeler=build_labeler(setup["labeler"]))


def test_an_image_processor_that_cannot_describe_itself_is_refused(setup):
    with pytest.raises(LabelCacheError, match=r"image_processor function has no fingerprint\(\)"):
        check_label_cache(LabelCache(setup["out"]), image_processor=lambda image: image)


# --- bad input --------------------------------------------------------------------
def _config_with(setup, tmp_path, rows=None, **label_data):
    ann = setup["ann"]
    if rows is not None:
        ann = tmp_path / "ann.json"
        ann.write_text(json.dumps(rows), encoding="utf-8")
    return write_config(tmp_path / "cfg.py", setup["labeler"], dict(setup["label_data"], ann_file=str(ann),
                                                                    **label_data))


def test_row_without_id_names_the_row(setup, tmp_path):
    rows = [{"id": "a", "image": "x.jpg"}, {"id": "b"}, {"image": "y.jpg", "conversations": []}]
    with pytest.raises(ValueError, match=r"row 2 has no 'id'"):
        run(_config_with(setup, tmp_path, rows), tmp_path / "out")


def test_duplicate_id_is_named(setup, tmp_path):
    rows = [{"id": "a", "image": "x.jpg"}, {"id": "dup", "image": "y.jpg"}, {"id": "dup", "image": "z.jpg"}]
    with pytest.raises(ValueError, match=r"duplicate sample id 'dup' in rows 1 and 2"):
        run(_config_with(setup, tmp_path, rows), tmp_path / "out")


def test_multi_image_row_is_refused(setup, tmp_path):
    rows = [{"id": "a", "image": ["x.jpg", "y.jpg"]}]
    with pytest.raises(ValueError, match=r"row 0 \(id 'a'\) has 'image' \['x.jpg', 'y.jpg'\]"):
        run(_config_with(setup, tmp_path, rows), tmp_path / "out")


def test_bad_label_data_keys(setup, tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['batchsize'\]"):
        run(_config_with(setup, tmp_path, batchsize=3), tmp_path / "out")
    with pytest.raises(ValueError, match=r"label_data.shard_size must be an int >= 1, got 0"):
        run(_config_with(setup, tmp_path, shard_size=0), tmp_path / "out")


def test_dataloader_workers_give_the_same_bytes(setup, tmp_path):
    out = tmp_path / "workers"
    assert run(setup["config"], out, "--cfg-options", "label_data.num_workers=2") == 0
    assert tree_bytes(out) == tree_bytes(setup["out"])


# --- two ranks ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_write_what_one_writes(setup, tmp_path):
    out = tmp_path / "two-ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(REPO / "tools" / "extract_labels.py"), setup["config"], "--out", str(out), "--device", "cpu",
           "--no-progress", *ACCEPT]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[rank 1] shard 2/3" in proc.stderr  # rank 1 took shard 1 (i % 2 == 1)
    assert proc.stdout.count("done:") == 1  # only rank 0 reports
    assert tree_bytes(out) == tree_bytes(setup["out"])
