"""Every config in projects/sea/configs loads and builds its model offline, with the paper's dims.

Hub models are built from the dims written in the configs on the meta device
(``LLaVAModel(init_empty=True)``): no weights, no download, no memory.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

import alignkit.models  # noqa: F401
from alignkit.registry import MODELS

CONFIGS = Path(__file__).resolve().parents[2] / "projects" / "sea" / "configs"
LEAVES = sorted(p.name for p in CONFIGS.glob("*.py"))

# E of each LLM (its hidden size) and P of each tower, as the paper's models have them.
E = {"vicuna7b": 4096, "vicuna13b": 5120, "gemma2b": 2048, "phi3_mini": 3072, "llama3_8b": 4096, "demo": 64}
P_CLIP_L336, P_SIGLIP384 = 24 * 24, 27 * 27


def stem_of(name: str) -> str:
    return name[: -len(".py")]


def expected(name: str) -> dict:
    stem = name[: -len(".py")]
    stage2 = stem.endswith("_finetune")
    base = stem.removesuffix("_finetune").removeprefix("llava15_").removesuffix("_openclip")  # same dims
    llm = "demo" if base == "demo_tiny" else base.removesuffix("_siglip384")
    siglip = base.endswith("_siglip384")
    return dict(
        E=E[llm], P=P_SIGLIP384 if siglip else (64 if llm == "demo" else P_CLIP_L336),
        D=1152 if siglip else (64 if llm == "demo" else 1024),
        sea=not stage2 and not stem.startswith("llava15_"),
        trainable={"adapter", "llm"} if stage2 else ({"adapter", "aligner"} if not stem.startswith("llava15_")
                                                    else {"adapter"}),
    )


def test_every_expected_config_exists():
    for stem in ("vicuna7b", "llava15_vicuna7b", "gemma2b", "phi3_mini", "llama3_8b", "vicuna13b",
                 "vicuna7b_siglip384", "demo_tiny"):
        assert f"{stem}.py" in LEAVES
        if stem not in ("demo_tiny", "llava15_vicuna7b"):
            assert f"{stem}_finetune.py" in LEAVES


@pytest.mark.parametrize("name", LEAVES)
def test_config_builds_with_the_paper_dims(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path))
    cfg = Config.fromfile(str(CONFIGS / name))
    assert cfg.default_scope == "alignkit"
    assert len((CONFIGS / name).read_text().splitlines()) <= 60, "leaf configs stay small"
    want = expected(name)
    model = MODELS.build(dict(cfg.model, init_empty=True))
    assert model.llm.config.hidden_size == want["E"]
    assert model.adapter.llm_dim == want["E"] and model.adapter.vision_dim == want["D"]
    assert model.vision_encoder.num_patches == want["P"]
    assert model.vision_encoder.feature_layer == -2
    # Each config preprocesses with its own tower's pipeline; the vicuna7b family is on LLaVA-1.5's own
    # (transformers' CLIP and CLIPImageProcessor), the *_openclip and SigLIP configs on open_clip.
    processor = cfg.train_dataloader.dataset.image_processor
    hf = type(model.vision_encoder).__name__ == "HFVisionEncoder"
    assert processor.type == ("HFImageProcessor" if hf else "OpenCLIPImageProcessor")
    assert processor.model_name == cfg.model.vision_encoder.model_name
    family = stem_of(name).removeprefix("llava15_").removesuffix("_finetune").removesuffix("_ve")
    if family == "vicuna7b" and not name.startswith("prime_"):
        assert hf, "vicuna7b's default backend is transformers (projects/sea/README.md)"
    assert (model.aligner is not None) == want["sea"]
    assert set(model.trainable) == want["trainable"]
    dataset = cfg.train_dataloader.dataset
    assert dataset.image_token_length == want["P"], "the dataset must budget P visual tokens per image"
    if name != "demo_tiny.py":
        assert dataset.tokenizer == cfg.model.tokenizer, "model and dataset must share one tokenizer"
        assert cfg.model.llm.pretrained and cfg.model.llm.config["hidden_size"] == want["E"]
    if want["sea"]:
        aligner = cfg.model.aligner
        assert aligner.labeler.top_n == 10 and aligner.loss.type == "InfoNCELoss"
        assert aligner.labeler.type.startswith("HF") == hf
        assert aligner.loss.init_logit_scale == 0.0 and aligner.loss_weight == 1.0
        assert [s["type"] for s in aligner.samplers] == ["SimilarityWeightedSampler", "WindowSampler", "DedupSampler"]
        assert aligner.samplers[1]["window"] == 2


@pytest.mark.parametrize("name", [n for n in LEAVES if n != "demo_tiny.py"])
def test_schedule_is_the_llava15_preset(name):
    cfg = Config.fromfile(str(CONFIGS / name))
    loader = cfg.train_dataloader
    if name.endswith("_finetune.py"):
        assert cfg.optim_wrapper.optimizer.lr == 2e-5 and loader.batch_size * 8 == 128
        assert cfg.strategy.zero_optimization.stage == 3 and loader.dataset.template != "plain"
        assert loader.dataset.image_processor.pad_to_square and loader.sampler.type == "LengthGroupedSampler"
        assert cfg.model.adapter_weights.endswith("adapter.safetensors")
    else:
        assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.optim_wrapper.optimizer.weight_decay == 0.0
        assert loader.batch_size * 8 == 256 and cfg.train_cfg.max_iters == -(-558128 // 256)
        assert loader.sampler.type == "InfiniteSampler" and loader.dataset.template == "plain"
        assert loader.dataset.max_length == 2048 and cfg.model.autocast_dtype == "bfloat16"
        assert cfg.param_scheduler[0].end == -(-3 * cfg.train_cfg.max_iters // 100)  # warmup 3 %
