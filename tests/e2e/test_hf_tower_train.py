"""The transformers tower end to end: tools/extract_labels.py -> LabelCache -> tools/train.py with the cache.

A tiny transformers CLIPModel (random weights, saved with save_pretrained like a
hub checkpoint), the demo photographs and captions, the demo LLM; the labeler is
``HFCLIPTopNLabeler``, the encoder ``HFVisionEncoder``, the images go through
transformers' own CLIP image processor in extraction and in training alike.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from alignkit.cli.extract_labels import main as extract_main
from alignkit.cli.train import main as train_main
from alignkit.datasets import open_image
from alignkit.labelers import LabelCache
from alignkit.registry import LABELERS
from alignkit.testing.demo import write_demo_data
from alignkit.testing.hf_tiny import save_hf_tower, tiny_clip

WORDS = ["cat", "coffee", "rocket", "astronaut", "clock", "horse", "coins", "camera", "cup", "sky", "galaxy", "tree"]

TRAIN_CONFIG = """
_base_ = [{stage1!r}, {runtime!r}]
custom_imports = dict(imports=['alignkit.engine', 'alignkit.testing.demo'],
                      allow_failed_imports=False)
clip = {clip!r}
labeler = dict(type='HFCLIPTopNLabeler', word_list={words!r}, top_n=3, cache_dir={banks!r})
model = dict(
    type='LLaVAModel',
    vision_encoder=dict(type='HFVisionEncoder', model_name=clip, feature_layer=-2),
    adapter=dict(type='MLPAdapter', depth=2, act='GELU'),
    llm=dict(pretrained=None, config=dict(model_type='llama', vocab_size=None, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                                          max_position_embeddings=512)),
    tokenizer=dict(type='demo_tokenizer'),
    aligner=dict(type='SEAAligner', labeler=labeler,
                 samplers=[dict(type='SimilarityWeightedSampler'), dict(type='WindowSampler', window=2),
                           dict(type='DedupSampler')],
                 loss=dict(type='InfoNCELoss', init_logit_scale=0.0)),
    trainable=['adapter', 'aligner'],
    autocast_dtype=None,
)
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, pin_memory=False,
    sampler=dict(type='InfiniteSampler', shuffle=True), collate_fn=dict(type='alignkit.llava_collate'),
    dataset=dict(type='DemoLLaVAPretrainDataset', data_root={data!r}, max_length=256, image_token_length=64,
                 image_processor=dict(type='HFImageProcessor', model_name=clip), label_cache={cache!r}),
)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=100))
custom_hooks = []
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_e2e")
    clip = save_hf_tower(tiny_clip(seed=0, image_size=64), root / "clip")  # 8x8 grid: P = 64
    ann = write_demo_data(root / "data")
    labeler = dict(type="HFCLIPTopNLabeler", model_name=clip, word_list=WORDS, top_n=3,
                   cache_dir=str(root / "banks"))
    label_data = dict(ann_file=ann, image_folder=str(root / "data"), batch_size=4, num_workers=0, shard_size=8)
    config = root / "labels.py"
    config.write_text(f"labeler = {labeler!r}\nlabel_data = {label_data!r}\n", encoding="utf-8")
    cache = root / "label_cache"
    assert extract_main([str(config), "--out", str(cache), "--device", "cpu", "--no-progress"]) == 0
    return dict(root=root, clip=clip, ann=ann, labeler=labeler, cache=cache)


def test_extracted_cache_equals_the_labeler_and_names_the_backend(world):
    labeler = LABELERS.build(dict(world["labeler"], device="cpu"))
    cache = LabelCache(world["cache"], expect=labeler.fingerprint(), verify=True)
    assert cache.manifest["labeler"]["backend"] == "transformers"
    rows = json.loads(Path(world["ann"]).read_text())
    assert len(cache) == len(rows) and cache.grid == labeler.grid == (8, 8)
    for row in rows[::7]:
        image = open_image(row["image"], root=Path(world["ann"]).parent)
        pixels = labeler.transform(image)  # transformers' CLIPImageProcessor, as extraction used
        direct = labeler(pixels[None])
        cached = cache[row["id"]]
        assert torch.equal(cached.words, direct.words)
        torch.testing.assert_close(cached.scores, direct.scores, atol=1e-3, rtol=1e-3)  # stored as fp16


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    configs = Path(__file__).resolve().parents[2] / "projects" / "sea" / "configs" / "_base_"
    text = TRAIN_CONFIG.format(stage1=str(configs / "schedules" / "stage1.py"),
                               runtime=str(configs / "default_runtime.py"), clip=world["clip"], words=WORDS,
                               banks=str(world["root"] / "banks"), data=str(world["root"] / "data"),
                               cache=str(world["cache"]))
    config = tmp_path / "train_hf.py"
    config.write_text(text, encoding="utf-8")
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path / "cache_home"))
    try:
        runner = train_main([str(config), "--work-dir", str(tmp_path / "work")])
    finally:
        mp.undo()
    return dict(runner=runner, work=tmp_path / "work", root=tmp_path)


def test_training_reads_the_cache_with_the_transformers_encoder(world, trained):
    runner = trained["runner"]
    assert type(runner.model.vision_encoder).__name__ == "HFVisionEncoder"
    dataset = runner.train_dataloader.dataset
    assert dataset.label_cache_cfg == dict(root=str(world["cache"]))
    batch = next(iter(runner.train_dataloader))
    assert batch["data_samples"]["patch_labels"].grid == (8, 8)  # labels come from the cache
    # one loaded CLIPModel: the encoder holds the labeler's vision modules, not a copy
    labeler = runner.model.aligner.labeler
    assert runner.model.vision_encoder.tower.vision_model is labeler.model.vision_model
    scalars = sorted(trained["work"].glob("*/vis_data/scalars.json"))[-1]
    rows = [json.loads(x) for x in scalars.read_text().splitlines() if "loss_align" in x]
    assert len(rows) == 4 and all(r["loss_align"] == r["loss_align"] and r["align_pairs_after_dedup"] > 0
                                  for r in rows)


def test_the_export_sees_the_training_pixels_and_features(world, trained):
    from transformers import LlavaForConditionalGeneration

    from alignkit.cli.export_hf import export
    from alignkit.datasets.hf_image_processor import pil_processor_class

    runner = trained["runner"]
    model = runner.model.eval()
    out = export(model, runner.cfg, None, str(trained["root"] / "export"))
    llava = LlavaForConditionalGeneration.from_pretrained(out).eval()
    exported = pil_processor_class("clip").from_pretrained(out)
    row = json.loads(Path(world["ann"]).read_text())[9]  # the 640x427 rocket: open_clip would crop it differently
    image = open_image(row["image"], root=Path(world["ann"]).parent)
    ours = runner.train_dataloader.dataset.image_processor(image)
    theirs = exported.preprocess(image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(ours, theirs)  # pixel for pixel
    with torch.no_grad():
        visual, _ = model.encode_images(ours[None])
        feats = llava.get_image_features(pixel_values=theirs[None])
        feats = feats if isinstance(feats, torch.Tensor) else torch.stack(list(feats.pooler_output))
    torch.testing.assert_close(feats.reshape(visual.shape), visual, atol=1e-5, rtol=0)
