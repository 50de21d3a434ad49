"""LLaVADataset on real photographs: samples, text-only rows, bad data counted and replaced, loaders."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import sentencepiece as spm
import torch
from mmengine.logging import MMLogger
from PIL import Image
from torch.utils.data import DataLoader

from alignkit.datasets import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    SKIP_REASONS,
    BadSample,
    LLaVADataset,
    OpenCLIPImageProcessor,
    llava_collate,
)
from alignkit.labelers.cache import LabelCacheError, LabelCacheWriter, new_manifest, read_shard_header
from alignkit.registry import DATASETS
from alignkit.structures import PatchLabels

SIZE = 32  # tiny images keep the tests fast
PROCESSOR = dict(type="OpenCLIPImageProcessor", image_size=SIZE)
FILES = {"astronaut": "astronaut.png", "chelsea": "chelsea.jpg", "coffee": "coffee.jpg"}


def human(v):
    return {"from": "human", "value": v}


def gpt(v):
    return {"from": "gpt", "value": v}


def pretrain_row(i, image, caption, prompt="Give a brief description of the image.\n<image>"):
    return {"id": f"{i:09d}", "image": image, "conversations": [human(prompt), gpt(caption)]}


def write_json(path, rows):
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.fixture(scope="module")
def sp(sp_model):
    return spm.SentencePieceProcessor(model_file=str(sp_model))


def build(ann_file, sp_model, image_folder, **kwargs):
    cfg = dict(
        type="LLaVADataset",
        ann_file=ann_file,
        tokenizer=dict(name_or_path=str(sp_model)),
        image_processor=PROCESSOR,
        image_folder=str(image_folder),
    )
    cfg.update(kwargs)
    return DATASETS.build(cfg)


@pytest.fixture
def good_rows(captions):
    return [pretrain_row(i, FILES[name], captions[name]) for i, name in enumerate(FILES)]


def test_plain_samples_on_photos(tmp_path, photo_dir, sp_model, sp, captions, good_rows):
    ds = build(write_json(tmp_path / "pretrain.json", good_rows), sp_model, photo_dir, template="plain")
    assert len(ds) == 3
    proc = OpenCLIPImageProcessor(image_size=SIZE)
    for i, name in enumerate(FILES):
        s = ds[i]
        body = sp.encode(captions[name] + "\n")
        assert s["input_ids"].tolist() == [sp.bos_id(), IMAGE_TOKEN_INDEX] + body
        assert s["labels"].tolist() == [IGNORE_INDEX, IGNORE_INDEX] + body
        with Image.open(photo_dir / FILES[name]) as im:
            expected = proc(im.convert("RGB"))
            assert s["image_size"] == im.size
        torch.testing.assert_close(s["image"], expected, atol=0, rtol=0)
        assert s["has_image"] is True and s["sample_id"] == f"{i:09d}" and s["skipped"] == {}
        assert s["patch_labels"] is None and s["truncated"] is False and s["pad_token_id"] == sp.unk_id()
    assert ds.skip_counts() == {}


def instruct_rows(captions):
    return [
        {
            "id": "img-1",
            "image": "chelsea.jpg",
            "conversations": [
                human("What animal is this?\n<image>"),
                gpt("A cat."),
                human("What colour?"),
                gpt("Ginger."),
            ],
        },
        {"id": "txt-1", "conversations": [human("Name three primary colours."), gpt("Red, yellow and blue.")]},
        {
            "id": "img-2",
            "image": "coffee.jpg",
            "conversations": [human("<image>\nDescribe it."), gpt(captions["coffee"])],
        },
    ]


def test_instruct_mix_with_text_only_row(tmp_path, photo_dir, sp_model, sp, captions):
    rows = instruct_rows(captions)
    ds = build(
        write_json(tmp_path / "mix.json", rows),
        sp_model,
        photo_dir,
        template="vicuna_v1",
        image_processor=dict(PROCESSOR, pad_to_square=True),
    )
    text = ds[1]
    assert text["has_image"] is False and text["image_size"] is None
    assert text["image"].shape == (3, SIZE, SIZE) and not text["image"].any()
    assert IMAGE_TOKEN_INDEX not in text["input_ids"].tolist()
    image = ds[0]
    assert image["input_ids"].tolist().count(IMAGE_TOKEN_INDEX) == 1
    # LLaVA's modality lengths: word counts, negative for text-only rows.
    words = [sum(len(t["value"].split()) for t in r["conversations"]) for r in rows]
    assert ds.modality_lengths.tolist() == [words[0], -words[1], words[2]]
    assert ds.lengths.tolist() == [words[0] + 128, words[1], words[2] + 128]


def truncated_jpeg(photo_dir, path):
    data = (photo_dir / "chelsea.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def bad_dataset(tmp_path, photo_dir, sp_model, good_rows):
    truncated_jpeg(photo_dir, tmp_path / "broken.jpg")
    (tmp_path / "images").mkdir()
    for f in FILES.values():
        (tmp_path / "images" / f).write_bytes((photo_dir / f).read_bytes())
    (tmp_path / "images" / "broken.jpg").write_bytes((tmp_path / "broken.jpg").read_bytes())
    long_caption = " ".join(["cat"] * 80)
    rows = good_rows + [
        pretrain_row(10, "missing.jpg", "A photo that is not there."),
        pretrain_row(11, "broken.jpg", "A truncated JPEG file."),
        pretrain_row(12, "chelsea.jpg", "A cat.", prompt="Give a brief description of the image."),
        pretrain_row(13, "coffee.jpg", ""),
        pretrain_row(14, "astronaut.png", long_caption),
    ]
    expected = {
        "000000010": "missing_image",
        "000000011": "unreadable_image",
        "000000012": "no_image_token",
        "000000013": "empty_message",
        "000000014": "too_long",
    }
    ds = build(write_json(tmp_path / "bad.json", rows), sp_model, tmp_path / "images", template="plain", max_length=48)
    return ds, expected


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_bad_data_counted_logged_and_replaced(bad_dataset):
    ds, expected = bad_dataset
    handler = ListHandler()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        samples = [ds[i] for i in range(len(ds))]  # the run continues through every bad row
    finally:
        logger.removeHandler(handler)
    good_ids = {"000000000", "000000001", "000000002"}
    assert all(s["sample_id"] in good_ids for s in samples)
    for i, s in enumerate(samples):
        row_id = f"{i:09d}" if i < 3 else f"{i + 7:09d}"
        assert s["skipped"] == ({expected[row_id]: 1} if row_id in expected else {})
        assert (s["labels"] != IGNORE_INDEX).any()  # never an all-ignored mask
    assert ds.skip_counts() == {reason: 1 for reason in expected.values()}
    assert set(ds.skip_counts()) <= set(SKIP_REASONS)
    for row_id, reason in expected.items():
        assert any(row_id in m and reason in m for m in handler.messages), (row_id, reason)


def test_skip_counts_cross_worker_processes(bad_dataset):
    ds, expected = bad_dataset
    loader = DataLoader(ds, batch_size=3, num_workers=1, collate_fn=llava_collate)
    total = {}
    for batch in loader:
        for reason, n in batch["data_samples"]["skipped"].items():
            total[reason] = total.get(reason, 0) + n
    assert total == {reason: 1 for reason in expected.values()}
    assert ds.skip_counts() == {}  # this process fetched nothing itself


def test_test_mode_raises_instead_of_replacing(bad_dataset, tmp_path, sp_model):
    ds, _ = bad_dataset
    strict = build(ds.ann_file, sp_model, ds.image_folder, template="plain", max_length=48, test_mode=True)

    with pytest.raises(BadSample, match="missing_image"):
        strict[3]


@pytest.mark.parametrize("image_token_length", [1, 8])
def test_truncate_option_counts_and_keeps_the_image(tmp_path, photo_dir, sp_model, sp, image_token_length):
    caption = " ".join(["cat"] * 80)
    ann = write_json(tmp_path / "long.json", [pretrain_row(0, "chelsea.jpg", caption)])
    ds = build(
        ann, sp_model, photo_dir, template="plain", max_length=40, truncate=True, image_token_length=image_token_length
    )
    s = ds[0]
    assert s["truncated"] is True and s["skipped"] == {}
    assert len(s["input_ids"]) + image_token_length - 1 == 40
    full = [sp.bos_id(), IMAGE_TOKEN_INDEX] + sp.encode(caption + "\n")
    assert s["input_ids"].tolist() == full[: 41 - image_token_length]
    assert llava_collate([s])["data_samples"]["num_truncated"] == 1


def test_image_tokens_count_towards_max_length(tmp_path, photo_dir, sp_model, sp):
    caption = "A ginger cat."
    n = 2 + len(sp.encode(caption + "\n"))
    rows = [pretrain_row(0, "chelsea.jpg", caption), pretrain_row(1, "coffee.jpg", "Cup.")]  # row 1 is shorter
    ann = write_json(tmp_path / "two.json", rows)
    assert build(ann, sp_model, photo_dir, max_length=n + 3, image_token_length=4)[0]["skipped"] == {}
    ds = build(ann, sp_model, photo_dir, max_length=n + 2, image_token_length=4)
    assert ds[0]["skipped"] == {"too_long": 1} and ds[0]["sample_id"] == "000000001"


class DictLabelCache:
    """The interface the dataset needs from a label cache: grid, top_n, [sample_id] -> PatchLabels (B=1)."""

    def __init__(self, labels: dict[str, PatchLabels], grid, top_n):
        self.labels, self.grid, self.top_n = labels, grid, top_n

    def __getitem__(self, sample_id):
        return self.labels[str(sample_id)]


def test_label_cache_labels_reach_the_batch(tmp_path, photo_dir, sp_model, captions):
    rows = instruct_rows(captions)
    g = torch.Generator().manual_seed(0)
    entry = PatchLabels(torch.randint(0, 50, (1, 4, 3), generator=g), torch.rand(1, 4, 3, generator=g), (2, 2))
    cache = DictLabelCache({"img-1": entry}, grid=(2, 2), top_n=3)  # img-2 has no labels
    ds = build(write_json(tmp_path / "mix.json", rows), sp_model, photo_dir, template="vicuna_v1", label_cache=cache)
    batch = llava_collate([ds[0], ds[1]])
    labels = batch["data_samples"]["patch_labels"]
    assert labels.words.shape == (2, 4, 3) and labels.grid == (2, 2)
    assert torch.equal(labels.words[0], entry.words[0]) and torch.equal(labels.scores[0], entry.scores[0])
    assert (labels.words[1] == -1).all() and (labels.scores[1] == 0).all()  # text-only: empty labels
    assert batch["data_samples"]["sample_ids"] == ["img-1", "txt-1"]
    assert ds[2]["skipped"] == {"missing_labels": 1}


def test_mmengine_dataloader_with_length_grouped_sampler(tmp_path, photo_dir, sp_model, captions):
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    rows = instruct_rows(captions) * 3
    ds = build(write_json(tmp_path / "mix.json", rows), sp_model, photo_dir, template="vicuna_v1")
    with DefaultScope.overwrite_default_scope("alignkit"):  # as a config's default_scope does
        loader = Runner.build_dataloader(
            dict(
                batch_size=2,
                num_workers=0,
                dataset=ds,
                sampler=dict(type="LengthGroupedSampler", batch_size=2),
                # The Runner looks collate functions up in mmengine's root registry without the
                # default scope, so the scope is spelled out (samplers and datasets do not need it).
                collate_fn=dict(type="alignkit.llava_collate"),
            ),
            seed=0,
        )
    seen, mixed = [], []
    batches = list(loader)
    for k, batch in enumerate(batches):
        has_image = batch["inputs"]["has_image"]
        if has_image.any() and not has_image.all():
            mixed.append(k)
        seen += batch["data_samples"]["sample_ids"]
    assert sorted(seen) == sorted(r["id"] for r in rows)
    # Only the merged leftover megabatch (first or last) may mix image and text-only rows.
    assert set(mixed) <= {0, len(batches) - 1} and len(mixed) <= 1


def test_infinite_sampler_works(tmp_path, photo_dir, sp_model, good_rows):
    from mmengine.dataset import InfiniteSampler

    ds = build(write_json(tmp_path / "p.json", good_rows), sp_model, photo_dir)
    loader = DataLoader(ds, batch_size=2, sampler=InfiniteSampler(ds, shuffle=True, seed=0), collate_fn=llava_collate)
    it = iter(loader)
    ids = [sid for _ in range(3) for sid in next(it)["data_samples"]["sample_ids"]]
    assert sorted(ids[:3]) == sorted(r["id"] for r in good_rows)  # one full pass first
    assert len(ids) == 6


@pytest.mark.parametrize("serialize_data", [True, False])
def test_lazy_init_indices_and_serialisation(tmp_path, photo_dir, sp_model, good_rows, serialize_data):
    ann = write_json(tmp_path / "p.json", good_rows)
    ds = build(ann, sp_model, photo_dir, lazy_init=True, indices=[2, 0], serialize_data=serialize_data)
    assert len(ds) == 2
    assert [ds[i]["sample_id"] for i in range(2)] == [good_rows[2]["id"], good_rows[0]["id"]]
    assert (ds.modality_lengths > 0).all() and len(ds.modality_lengths) == 2


def test_bad_arguments(tmp_path, sp_model, good_rows, photo_dir):
    ann = write_json(tmp_path / "p.json", good_rows)
    with pytest.raises(ValueError, match="image_processor is required"):
        LLaVADataset(ann, tokenizer=dict(name_or_path=str(sp_model)))
    with pytest.raises(ValueError, match="max_length"):
        build(ann, sp_model, photo_dir, max_length=0)
    with pytest.raises(ValueError, match="template must be one of"):
        build(ann, sp_model, photo_dir, template="vicuna")
    (tmp_path / "obj.json").write_text('{"id": 1}')
    with pytest.raises(ValueError, match="JSON list"):
        build(str(tmp_path / "obj.json"), sp_model, photo_dir)
    assert np.array_equal(
        build(ann, sp_model, photo_dir).modality_lengths,
        [len(r["conversations"][0]["value"].split()) + len(r["conversations"][1]["value"].split()) for r in good_rows],
    )


def test_a_corrupt_label_cache_stops_the_run_instead_of_skipping(tmp_path, photo_dir, sp_model, captions, good_rows):
    """A shard with a NaN score is the cache's fault, not the sample's: counting every sample of the
    shard as skipped would train on a silently shrunken dataset. The dataset lets the error through."""
    ids = [row["id"] for row in good_rows]
    g = torch.Generator().manual_seed(0)
    labels = PatchLabels(torch.randint(0, 50, (len(ids), 4, 3), generator=g), torch.rand(len(ids), 4, 3, generator=g),
                         (2, 2))
    manifest = new_manifest({"backend": "open_clip", "top_n": 3}, num_words=50, grid=(2, 2), precision="float32",
                            data={"num_no_image": 0}, shard_size=len(ids), num_images=len(ids))
    writer = LabelCacheWriter(tmp_path / "labels", manifest)
    writer.open()
    shard = writer.shard(0, 0, len(ids) - 1)
    shard.add(labels, ids)
    writer.finish({0: shard.write()})
    path = tmp_path / "labels" / "shards" / "shard-00000.safetensors"
    tensors, _, start = read_shard_header(path)
    with open(path, "r+b") as f:  # the last score of the last sample -> NaN, same file size
        f.seek(start + tensors["scores"]["data_offsets"][1] - 2)
        f.write(np.array(np.nan, "<f2").tobytes())

    ds = build(write_json(tmp_path / "rows.json", good_rows), sp_model, photo_dir, label_cache=str(tmp_path / "labels"))
    with pytest.raises(LabelCacheError, match=r"shard-00000\.safetensors is corrupt: scores\[2, 3, 2\]"):
        ds[0]
    assert ds.skip_counts() == {}
