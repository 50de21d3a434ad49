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
E = {"vicuna7b": 4096, "vicuna13b": 5120, "gemma2b": 2048, "phi3_mini": 3072, "llama3_8b": 4096, "demo": 64,
     "demo_smollm2": 576}
P_DEMO = {"demo": 64, "demo_smollm2": 16}  # the demo CLIP at 64 px and at 32 px, 8 px patches
P_CLIP_L336, P_SIGLIP384 = 24 * 24, 27 * 27
S2_SCALES = (336, 672, 1008)  # LLaVA's S² preset: CLIP-L/336 crops, images at 1008 px, D = 3 x 1024


LLMS = ("vicuna7b", "gemma2b", "phi3_mini", "llama3_8b", "vicuna13b")
PAPER_ROWS = (
    # Table 2: SEA and the LLaVA-1.5 baseline, each LLM, CLIP-L/336; Vicuna-7B with SigLIP-SO/384 and with
    # the S²-Wrapper (CLIP-L at 336/672/1008)
    *(f"{p}{llm}{s}" for p in ("", "llava15_") for llm in (*LLMS, "vicuna7b_siglip384", "vicuna7b_s2")
      for s in ("", "_finetune")),
    # Table 1: SEA-PRIME (SigLIP-SO/384, Cambrian data, vision encoder tuned in stage 2)
    *(f"prime_{llm}{s}" for llm in LLMS for s in ("", "_finetune")),
    # Table 3: stage 2 with the vision encoder unfrozen, SEA and baseline
    "vicuna7b_finetune_ve", "llava15_vicuna7b_finetune_ve",
    # Table 2's Vicuna-7B rows on the open_clip tower (the defaults run transformers' CLIP, as LLaVA-1.5 does)
    "vicuna7b_openclip", "llava15_vicuna7b_openclip", "vicuna7b_openclip_finetune",
    # the offline demos
    "demo_tiny", "demo_smollm2", "demo_smollm2_finetune",
)


def stem_of(name: str) -> str:
    return name[: -len(".py")]


def expected(name: str) -> dict:
    stem = name[: -len(".py")]
    tune_ve = stem.endswith("_finetune_ve") or (stem.startswith("prime_") and stem.endswith("_finetune"))
    stage2 = stem.removesuffix("_ve").endswith("_finetune")
    baseline, prime = stem.startswith("llava15_"), stem.startswith("prime_")
    base = stem.removesuffix("_ve").removesuffix("_finetune").removeprefix("llava15_").removeprefix("prime_")
    base = base.removesuffix("_openclip")  # same dims
    llm = "demo" if base == "demo_tiny" else base.removesuffix("_siglip384").removesuffix("_s2")
    siglip = prime or base.endswith("_siglip384")
    s2 = base.endswith("_s2")
    if stage2:
        trainable = {"adapter", "llm"} | ({"vision_encoder"} if tune_ve else set())
    else:
        trainable = {"adapter"} if baseline else {"adapter", "aligner"}
    return dict(
        E=E[llm], P=P_SIGLIP384 if siglip else P_DEMO.get(llm, P_CLIP_L336),
        D=1152 if siglip else (64 if llm in P_DEMO else (len(S2_SCALES) if s2 else 1) * 1024),
        sea=not stage2 and not baseline, trainable=trainable, tune_ve=tune_ve, prime=prime, stage2=stage2, s2=s2,
    )


def test_every_paper_row_has_a_config():
    assert sorted(f"{row}.py" for row in PAPER_ROWS) == LEAVES


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
    encoder, encoder_cfg = model.vision_encoder, cfg.model.vision_encoder
    if want["s2"]:  # S² wraps the tower's own encoder; images arrive at the largest scale
        assert type(encoder).__name__ == "MultiScaleVisionEncoder" and encoder.scales == S2_SCALES
        assert processor.image_size == S2_SCALES[-1] and encoder.image_size == (S2_SCALES[-1],) * 2
        encoder, encoder_cfg = encoder.encoder, encoder_cfg.encoder
        assert encoder.vision_dim * len(S2_SCALES) == want["D"] and encoder.num_patches == want["P"]
    hf = type(encoder).__name__ == "HFVisionEncoder"
    assert processor.type == ("HFImageProcessor" if hf else "OpenCLIPImageProcessor")
    assert processor.model_name == encoder_cfg.model_name
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
        labeler = aligner.labeler
        if want["s2"]:  # S²'s labels: the base scale of its 1008-px images; extract_labels reads the same labeler
            assert labeler.type == "MultiScaleLabeler" and tuple(labeler.scales) == S2_SCALES
            assert cfg.labeler == labeler and cfg.label_data.ann_file.endswith("blip_laion_cc_sbu_558k.json")
            labeler = labeler.labeler
        assert labeler.top_n == 10 and aligner.loss.type == "InfoNCELoss"
        assert labeler.type.startswith("HF") == hf
        assert aligner.loss.init_logit_scale == 0.0 and aligner.loss_weight == 1.0
        assert [s["type"] for s in aligner.samplers] == ["SimilarityWeightedSampler", "WindowSampler", "DedupSampler"]
        assert aligner.samplers[1]["window"] == 2


@pytest.mark.parametrize("name", [n for n in LEAVES if not n.startswith("demo_")])
def test_schedule_is_the_llava15_preset(name):
    cfg = Config.fromfile(str(CONFIGS / name))
    want = expected(name)
    loader = cfg.train_dataloader
    if want["stage2"]:
        assert cfg.optim_wrapper.optimizer.lr == 2e-5 and loader.batch_size * 8 == 128
        assert cfg.strategy.zero_optimization.stage == 3 and loader.dataset.template != "plain"
        assert loader.dataset.image_processor.pad_to_square and loader.sampler.type == "LengthGroupedSampler"
        assert cfg.model.adapter_weights.endswith("adapter.safetensors")
        rows = 7_000_000 if want["prime"] else 665298
        assert cfg.train_cfg.max_iters == -(-rows // 128)
        custom = (cfg.optim_wrapper.get("paramwise_cfg") or {}).get("custom_keys", {})
        if want["tune_ve"]:  # the vision encoder at lr 2e-6 (paper §5.1, Table 3)
            assert cfg.optim_wrapper.optimizer.lr * custom["vision_encoder"]["lr_mult"] == pytest.approx(2e-6)
        else:
            assert "vision_encoder" not in custom
    else:
        rows = 2_500_000 if want["prime"] else 558128
        assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.optim_wrapper.optimizer.weight_decay == 0.0
        assert loader.batch_size * 8 == 256 and cfg.train_cfg.max_iters == -(-rows // 256)
        assert loader.sampler.type == "InfiniteSampler" and loader.dataset.template == "plain"
        assert loader.dataset.max_length == 2048 and cfg.model.autocast_dtype == "bfloat16"
    assert cfg.param_scheduler[0].end == -(-3 * cfg.train_cfg.max_iters // 100)  # warmup 3 %
    if want["prime"]:
        assert loader.dataset.sources[0].ann_file.endswith(".jsonl")
