"""LLaVADataset at the boundary: bad files name the file and position, bad rows are counted skips,
images are read by open_image (16-bit, size limits, confined paths), JSONL and several sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from alignkit.datasets import IGNORE_INDEX, LLaVADataset, OpenCLIPImageProcessor, llava_collate, load_tokenizer
from alignkit.datasets.annotations import AnnotationFileError
from alignkit.datasets.constants import ERROR_PREFIX, SKIP_REASONS, is_skip_reason
from alignkit.registry import DATASETS

SIZE = 16


@pytest.fixture(scope="module")
def tok(sp_model):
    return load_tokenizer(name_or_path=str(sp_model))


@pytest.fixture(scope="module")
def proc():
    return OpenCLIPImageProcessor(image_size=SIZE)


def human(v):
    return {"from": "human", "value": v}


def gpt(v):
    return {"from": "gpt", "value": v}


def row(i, image="cat.png", caption="A ginger cat.", prompt="<image>\nWhat is this?"):
    r = {"id": str(i), "conversations": [human(prompt), gpt(caption)]}
    if image is not None:
        r["image"] = image
    return r


def text_row(i, q="Name a colour.", a="Red."):
    return {"id": str(i), "conversations": [human(q), gpt(a)]}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """images/cat.png (RGB), images/g16.png (16-bit gray), images/strip.png (3000×1), ../outside.png."""
    base = tmp_path_factory.mktemp("trust")
    root = base / "images"
    root.mkdir()
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / "cat.png")
    Image.fromarray(np.tile(np.linspace(0, 65535, 32).round().astype(np.uint16), (24, 1))).save(root / "g16.png")
    Image.new("L", (3000, 1), 128).save(root / "strip.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(base / "outside.png")
    return root


def make(tmp_path, rows, tok, proc, root, name="ann.json", template="vicuna_v1", **kw):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return LLaVADataset(str(path), tokenizer=tok, template=template, image_processor=proc,
                        image_folder=str(root), **kw)


# --- files ----------------------------------------------------------------------------------------------------
# Offsets: '[{"id": "caf' is 12 bytes; '{"id": "a"}\n' is 12 bytes, then '{"id": "caf' 11 more.
@pytest.mark.parametrize("name, data, match", [
    ("latin1.json", b'[{"id": "caf\xe9"}]', r"latin1.json: line 1: byte b'\\xe9' at byte offset 12 is not UTF-8"),
    ("latin1.jsonl", b'{"id": "a"}\n{"id": "caf\xe9"}\n',
     r"latin1.jsonl: line 2: byte b'\\xe9' at byte offset 23 is not UTF-8"),
    ("cut.json", b'[{"id": "a", "conversations": [\n{"from": "human", "val', r"cut.json: line 2 column .*invalid JSON"),
    ("cut.jsonl", b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "conv', r"cut.jsonl: line 3 column 13: invalid JSON"),  # the 13th character opens "conv
    ("empty.json", b"[]", r"empty.json: holds no rows"),
    ("empty.jsonl", b"\n\n", r"empty.jsonl: holds no rows"),
    ("obj.json", b'{"id": 1}', r"obj.json: must hold a JSON list of rows, got a JSON dict"),
])
def test_bad_files_name_the_file_and_position(tmp_path, tok, proc, name, data, match):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(AnnotationFileError, match=match):
        LLaVADataset(str(tmp_path / name), tokenizer=tok, image_processor=proc)
    with pytest.raises(AnnotationFileError, match="nowhere.json: does not exist"):
        LLaVADataset(str(tmp_path / "nowhere.json"), tokenizer=tok, image_processor=proc)


def test_utf8_bom_is_accepted(tmp_path, tok, proc, images):
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([row(0)]).encode())
    ds = LLaVADataset(str(tmp_path / "bom.json"), tokenizer=tok, image_processor=proc, image_folder=str(images),
                      template="vicuna_v1")
    assert ds[0]["skipped"] == {}


# --- rows -----------------------------------------------------------------------------------------------------
def test_rows_that_used_to_kill_the_run_are_counted_skips(tmp_path, tok, proc, images):
    rows = [
        row("good"),
        {"id": "list-role", "image": "cat.png", "conversations": [{"from": ["human"], "value": "<image>\nHi"},
                                                                   gpt("A cat.")]},
        row("surrogate", caption="A cat \ud800 here."),  # written as the JSON escape \ud800
        row("surrogate-path", image="cat\ud800.png"),
        "not a row",
        [1, 2],
        {"id": {"nested": 1}, "conversations": 3},
    ]
    ds = make(tmp_path, rows, tok, proc, images)
    out = [ds[i] for i in range(len(ds))]
    assert all(s["sample_id"] == "good" for s in out)
    assert [s["skipped"] for s in out] == [{}, {"bad_conversation": 1}, {"bad_text": 1}, {"bad_row": 1},
                                           {"bad_row": 1}, {"bad_row": 1}, {"bad_conversation": 1}]
    # The replacement path: a bad row drawn as a replacement is not fatal either.
    only_bad_then_good = make(tmp_path, rows[1:] + rows[:1], tok, proc, images, name="b.json")
    for i in range(len(rows) - 1):
        assert only_bad_then_good[i]["sample_id"] == "good"


def test_an_unexpected_exception_is_counted_under_its_type(tmp_path, tok, images, caplog):
    class Exploding(OpenCLIPImageProcessor):
        def __call__(self, image):
            raise RuntimeError("processor bug")

    ds = make(tmp_path, [row("a"), text_row("t")], tok, Exploding(image_size=SIZE), images)
    s = ds[0]
    assert s["sample_id"] == "t" and s["skipped"] == {"error:RuntimeError": 1}
    assert ds.skip_counts() == {"error:RuntimeError": 1}
    assert is_skip_reason("error:RuntimeError") and not is_skip_reason("error:") and not is_skip_reason("nope")
    strict = make(tmp_path, [row("a")], tok, Exploding(image_size=SIZE), images, name="s.json", test_mode=True)
    with pytest.raises(Exception, match="error:RuntimeError: processor bug") as info:
        strict[0]
    assert isinstance(info.value.__cause__, RuntimeError)  # the original is kept, not swallowed


def test_all_bad_rows_end_with_an_error_that_names_the_last_failure(tmp_path, tok, proc, images):
    ds = make(tmp_path, [row("a", image="missing.png")], tok, proc, images, max_refetch=3)
    with pytest.raises(RuntimeError, match=r"no trainable sample found in 4 tries.*missing.png: does not exist"):
        ds[0]


# --- images through the dataset --------------------------------------------------------------------------------
def test_images_go_through_open_image(tmp_path, tok, proc, images):
    rows = [row("g16", image="g16.png"), row("strip", image="strip.png"), row("out", image="../outside.png"),
            row("abs", image=str(images.parent / "outside.png")), row("ok")]
    ds = make(tmp_path, rows, tok, proc, images)
    s = ds[0]
    a = np.tile(np.linspace(0, 65535, 32).round().astype(np.uint16), (24, 1))
    expected = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)).convert("RGB")
    torch.testing.assert_close(s["image"], proc(expected), atol=0, rtol=0)  # not the clipped all-white image
    assert [ds[i]["skipped"] for i in range(1, 4)] == [
        {"image_too_large": 1}, {"image_outside_root": 1}, {"image_outside_root": 1}]
    free = make(tmp_path, rows, tok, proc, images, name="free.json", allow_outside_root=True, max_image_aspect=3000)
    assert [free[i]["skipped"] for i in range(1, 4)] == [{}, {}, {}]
    with pytest.raises(ValueError, match="max_image_pixels"):
        make(tmp_path, rows, tok, proc, images, max_image_pixels=0)


# --- JSONL, several sources, text-only rows ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_roots(tmp_path_factory):
    """Two image folders that both hold x.png, in different colours."""
    base = tmp_path_factory.mktemp("roots")
    for name, colour in (("a", (200, 10, 10)), ("b", (10, 10, 200))):
        (base / name).mkdir()
        Image.new("RGB", (20, 12), colour).save(base / name / "x.png")
    return base


def test_sources_each_with_its_own_image_folder(tmp_path, tok, proc, two_roots):
    (tmp_path / "a.json").write_text(json.dumps([row("a0", image="x.png"), text_row("a1")]))
    (tmp_path / "b.jsonl").write_text(json.dumps(row("b0", image="x.png")) + "\n\n" + json.dumps(text_row("b1")) + "\n")
    cfg = dict(type="LLaVADataset", tokenizer=tok, template="vicuna_v1", image_processor=proc, data_root=str(tmp_path),
               sources=[dict(ann_file="a.json", image_folder=str(two_roots / "a")),
                        dict(ann_file="b.jsonl", image_folder=str(two_roots / "b"))])
    ds = DATASETS.build(cfg)
    assert len(ds) == 4
    samples = [ds[i] for i in range(4)]
    assert [s["sample_id"] for s in samples] == ["a0", "a1", "b0", "b1"]
    assert [s["has_image"] for s in samples] == [True, False, True, False]
    for s, folder in ((samples[0], "a"), (samples[2], "b")):
        with Image.open(two_roots / folder / "x.png") as im:
            torch.testing.assert_close(s["image"], proc(im.convert("RGB")), atol=0, rtol=0)
    assert (ds.modality_lengths > 0).tolist() == [True, False, True, False]
    batch = llava_collate(samples)
    assert batch["inputs"]["has_image"].tolist() == [True, False, True, False]
    assert not batch["inputs"]["images"][1].any()

    with pytest.raises(ValueError, match="not both"):
        DATASETS.build(dict(cfg, ann_file="a.json"))
    with pytest.raises(ValueError, match=r"sources\[0\] has unknown keys \['images'\]"):
        DATASETS.build(dict(cfg, sources=[dict(ann_file="a.json", images="x")]))
    with pytest.raises(ValueError, match="needs ann_file, or sources"):
        DATASETS.build(dict(cfg, sources=None))
    bad = tmp_path / "c.jsonl"
    bad.write_text(json.dumps(row("c0")) + "\n{oops\n")
    with pytest.raises(AnnotationFileError, match=r"c.jsonl: line 2 column 2"):
        DATASETS.build(dict(cfg, sources=[*cfg["sources"], dict(ann_file=str(bad))]))


def test_a_source_without_image_folder_uses_the_datasets(tmp_path, tok, proc, two_roots):
    (tmp_path / "a.jsonl").write_text(json.dumps(row("a0", image="x.png")) + "\n")
    ds = LLaVADataset(tokenizer=tok, template="vicuna_v1", image_processor=proc, image_folder=str(two_roots / "b"),
                      sources=[dict(ann_file=str(tmp_path / "a.jsonl"))])
    with Image.open(two_roots / "b" / "x.png") as im:
        torch.testing.assert_close(ds[0]["image"], proc(im.convert("RGB")), atol=0, rtol=0)


# --- any row at all ---------------------------------------------------------------------------------------------
_TEXT = st.one_of(
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12),  # lone surrogates included
    st.sampled_from(["<image>", "<image>\nWhat is this?", "A cat.", "human", "gpt", "\ud800", "cat.png", "", " "]),
)
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2, 10**20), st.floats(allow_nan=False), _TEXT)
_JSON = st.recursive(_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                    st.dictionaries(_TEXT, kids, max_size=4)), max_leaves=12)
_TURN = st.one_of(
    st.fixed_dictionaries({"from": st.one_of(st.sampled_from(["human", "gpt", "system"]), _JSON),
                           "value": st.one_of(_TEXT, _JSON)}),
    _JSON,
)
_ROW = st.one_of(
    _JSON,
    st.fixed_dictionaries(
        {},
        optional={"id": _JSON, "image": st.one_of(st.sampled_from(["cat.png", "g16.png", "missing.png",
                                                                    "../outside.png", "strip.png"]), _JSON),
                  "conversations": st.one_of(st.lists(_TURN, max_size=4), _JSON)},
    ),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(_ROW, min_size=1, max_size=3), jsonl=st.booleans())
def test_any_row_gives_a_good_sample_or_a_counted_skip(tmp_path, tok, proc, images, rows, jsonl):
    good = row("the-good-one")
    ds = make(tmp_path, [*rows, good], tok, proc, images, name="any.jsonl" if jsonl else "any.json",
              max_length=256, serialize_data=False)  # mmengine's serialisation runs gc.collect(): ~1 s each
    for i in range(len(rows)):
        s = ds[i]
        assert len(s["skipped"]) <= 1
        for reason in s["skipped"]:
            assert reason in SKIP_REASONS, f"unexpected {reason}: {ds.skip_counts()}"  # every failure is named
        # A good sample: ids and labels line up, something is supervised, the image has the processor's shape.
        assert s["input_ids"].dtype == torch.long and s["input_ids"].shape == s["labels"].shape
        assert (s["labels"] != IGNORE_INDEX).any()
        assert s["image"].shape == (3, SIZE, SIZE)
        if not s["skipped"]:
            assert s["sample_id"] == ds.get_data_info(i)["sample_id"]
    assert not any(r.startswith(ERROR_PREFIX) for r in ds.skip_counts())
