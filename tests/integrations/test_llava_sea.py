"""LlavaSEA on transformers' LlavaForConditionalGeneration: the same loss as the aligner on an explicit forward.

The reference runs the pieces by hand — the LLaVA tower's own forward, LLaVA's
feature selection and projector, the labeler's dense head, ``SEAAligner`` with
the same draws — and must equal what the hooks capture from ``model(...)``.
"""
from __future__ import annotations

import pytest
import torch

from alignkit.integrations.transformers import LlavaSEA
from alignkit.labelers import HFCLIPTopNLabeler, HFSigLIPTopNLabeler
from alignkit.testing.demo import demo_tokenizer
from alignkit.testing.hf_tiny import save_hf_tower, tiny_clip, tiny_llava, tiny_siglip
from alignkit.towers.transformers import forward_features

WORDS = ["cat", "cup", "sky", "rocket", "tree", "clock", "horse", "coin"]


def batch(model, labeler, tokenizer, n: int = 3, seed: int = 0) -> dict:
    h, w = labeler.grid
    prefix = [tokenizer.bos_token_id] + [model.config.image_token_id] * (h * w)
    caption = tokenizer("a cat on a cup", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prefix + caption] * n)
    labels = torch.tensor([[-100] * len(prefix) + caption] * n)
    pixels = torch.randn(n, 3, *labeler.image_size, generator=torch.Generator().manual_seed(seed))
    return dict(input_ids=ids, labels=labels, pixel_values=pixels)


@pytest.fixture(scope="module", params=["clip", "siglip"])
def setup(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    tokenizer = demo_tokenizer()
    build, labeler_cls = (tiny_clip, HFCLIPTopNLabeler) if request.param == "clip" else (tiny_siglip, HFSigLIPTopNLabeler)
    tower = build(seed=0)
    labeler = labeler_cls(save_hf_tower(tower, root / "tower"), word_list=WORDS, top_n=3,
                          min_score=float("-inf"), cache_dir=str(root / "banks"), device="cpu")
    model = tiny_llava(build(seed=0), tokenizer)
    return dict(kind=request.param, tokenizer=tokenizer, labeler=labeler, model=model, build=build, root=root)


def test_hooks_give_the_loss_of_an_explicit_forward(setup):
    model, labeler, tokenizer = setup["model"], setup["labeler"], setup["tokenizer"]
    sea = LlavaSEA(model, labeler, tokenizer, generator=torch.Generator().manual_seed(5))
    inputs = batch(model, labeler, tokenizer)
    with torch.no_grad():
        model(**inputs)
        got = sea()
        # the reference: LLaVA's selection (hidden_states[-2], class token dropped for CLIP) through the projector
        feats, dense = forward_features(labeler.model, inputs["pixel_values"], (-2,))
        visual = model.model.multi_modal_projector(feats[-2])
        ref = sea.aligner(visual, dense=dense, generator=torch.Generator().manual_seed(5))
    for key in ("loss_align", "align_pairs_candidates", "align_pairs_after_dedup"):
        torch.testing.assert_close(got[key], ref[key], atol=1e-5, rtol=0)
    sea.remove()


def test_a_labeler_of_other_weights_is_refused(setup):
    other = setup["build"](seed=1)
    cls = type(setup["labeler"])
    labeler = cls(save_hf_tower(other, setup["root"] / "other"), word_list=WORDS, top_n=3,
                  cache_dir=str(setup["root"] / "banks"), device="cpu")
    with pytest.raises(ValueError, match="weights differ from the model's vision tower"):
        LlavaSEA(setup["model"], labeler, setup["tokenizer"])


def test_siglip_with_the_default_strategy_is_refused(tmp_path):
    # LLaVA's 'default' strategy drops the first token: on SigLIP (no class token) that is a real patch.
    tokenizer = demo_tokenizer()
    labeler = HFSigLIPTopNLabeler(save_hf_tower(tiny_siglip(seed=0), tmp_path / "siglip"), word_list=WORDS,
                                  top_n=3, cache_dir=str(tmp_path / "banks"), device="cpu")
    model = tiny_llava(tiny_siglip(seed=0), tokenizer, select_strategy="default")
    with pytest.raises(ValueError, match="has no class token"):
        LlavaSEA(model, labeler, tokenizer)


def test_a_model_without_a_vision_tower_is_named(setup):
    with pytest.raises(ValueError, match="exposes no vision_tower"):
        LlavaSEA(setup["model"].model.language_model, setup["labeler"], setup["tokenizer"])
