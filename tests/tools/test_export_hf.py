"""``tools/export_hf.py``: the demo checkpoint as a Hugging Face LLaVA folder, and the mapping under it.

A 2-iteration demo training run (module fixture) gives a real checkpoint and
its dumped config; the export is loaded back with transformers and must give
alignkit's logits. Tolerances (fp32 on CPU, alignkit's bf16 autocast switched off):

- same pixels, same ids: logits within atol 1e-4 (observed ~3e-7: the same
  math in a different order);
- pixels through the saved processor: within one 8-bit step of alignkit's,
  1/255 / min(std) = 0.0150 after normalisation (transformers' and torchvision's
  bicubic resize round differently), on an image whose crop offset is whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import alignkit.testing.demo  # noqa: F401  (registers the tiny ViT config)
from alignkit.cli.common import load_model_and_source
from alignkit.cli.export_hf import main
from alignkit.datasets.templates import get_template, tokenize_with_image
from alignkit.datasets.tokenizers import SentencePieceTokenizer
from alignkit.engine.compat import load_checkpoint_file
from alignkit.export.hf import (
    chat_template_for,
    check_prompt_ids,
    clip_vision_config,
    clip_vision_state_dict,
    expand_image_placeholders,
    generation_prompt,
    hf_tokenizer,
    image_processor_of,
    template_of,
    vision_feature_layer,
)
from alignkit.testing.demo import DEMO_CAPTIONS
from alignkit.testing.tokenizers import metaspace_bpe_tokenizer

P = 64  # the demo ViT: 64 px images, 8 px patches -> 8 x 8
VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions. USER: <image>\nWhat is this? ASSISTANT:")


@pytest.fixture(scope="module")
def demo(demo_checkpoint, tmp_path_factory):
    """The shared demo checkpoint (tests/tools/conftest.py) and its export."""
    base = demo_checkpoint["data"].parent
    ckpt = demo_checkpoint["ckpt"]
    out = str(tmp_path_factory.mktemp("export_hf") / "hf")
    main([ckpt, out])
    model, cfg, _ = load_model_and_source(ckpt)
    model.autocast_dtype = None  # compare in fp32: the demo trains under bf16 autocast
    return dict(base=base, ckpt=ckpt, out=out, model=model, cfg=cfg, image=str(base / "data" / "images" / "chelsea.png"))


@pytest.fixture(scope="module")
def hf(demo):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(demo["out"], dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(demo["out"])


def _prompt(demo, answer_start="a cat with"):
    template = template_of(demo["cfg"])
    text = generation_prompt(template, "What is this?") + answer_start
    ids = torch.tensor([tokenize_with_image(demo["model"].tokenizer, text, template.add_bos)])
    return text, ids


def test_folder_layout_and_config(demo, hf):
    out = Path(demo["out"])
    for name in ("config.json", "generation_config.json", "processor_config.json", "tokenizer.json",
                 "mm_projector.bin", "alignkit_export.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("*.safetensors"))
    model, processor = hf
    vocab = len(demo["model"].tokenizer)
    # the demo tokenizer has no <image>: it gets the next id, one row past the LLM's vocabulary
    assert model.config.image_token_id == vocab == processor.tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.text_config.vocab_size == vocab + 1
    assert model.config.image_seq_length == P and model.config.vision_feature_layer == -2
    assert model.config.vision_feature_select_strategy == "default" and model.config.projector_hidden_act == "gelu"
    assert vocab in model.generation_config.suppress_tokens
    info = json.loads((out / "alignkit_export.json").read_text())
    assert info["template"] == "plain" and info["embedding_rows_added"] == 1 and info["mm_projector_type"] == "mlp2x_gelu"


def test_logits_equal_alignkit_on_the_same_pixels_and_ids(demo, hf):
    model, _ = hf
    ours_model = demo["model"]
    pixels = image_processor_of(demo["cfg"], ours_model)(Image.open(demo["image"]))[None]
    _, ids = _prompt(demo)
    with torch.no_grad():
        ours = ours_model({"input_ids": ids, "images": pixels}, mode="tensor")  # (1, L, V)
        hf_ids = expand_image_placeholders(ids[0], model.config.image_token_id, P)[None]
        theirs = model(input_ids=hf_ids, pixel_values=pixels).logits  # (1, L, V + 1)
    v = ours.shape[-1]
    assert theirs.shape[:2] == ours.shape[:2] == (1, ids.shape[1] - 1 + P)
    torch.testing.assert_close(theirs[..., :v], ours, atol=1e-4, rtol=0)
    # the text positions carry the answer; check them on their own too
    text = hf_ids[0] != model.config.image_token_id
    torch.testing.assert_close(theirs[0, text, :v], ours[0, text], atol=1e-4, rtol=0)


def test_saved_processor_gives_alignkit_ids_and_pixels(demo, hf):
    model, processor = hf
    ours_model = demo["model"]
    proc = image_processor_of(demo["cfg"], ours_model)
    image = Image.open(demo["image"]).convert("RGB")  # 256 x 170 -> 96 x 64 -> crop offset 16, whole
    text, ids = _prompt(demo)
    enc = processor(images=image, text=text, return_tensors="pt")
    want = expand_image_placeholders(ids[0], model.config.image_token_id, P)
    assert enc["input_ids"][0].tolist() == want.tolist()
    pixels = proc(image)[None]
    step = (1 / 255) / min(proc.std)  # one 8-bit step after normalisation
    assert (enc["pixel_values"] - pixels).abs().max().item() <= step + 1e-6
    with torch.no_grad():
        ours = ours_model({"input_ids": ids, "images": enc["pixel_values"]}, mode="tensor")
        theirs = model(**enc).logits
    torch.testing.assert_close(theirs[..., : ours.shape[-1]], ours, atol=1e-4, rtol=0)


def test_mm_projector_bin_holds_the_checkpoint_adapter(demo):
    state = load_checkpoint_file(demo["ckpt"])["state_dict"]
    bin_ = torch.load(Path(demo["out"]) / "mm_projector.bin", weights_only=True)
    assert sorted(bin_) == [f"model.mm_projector.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")]
    for i in (0, 2):
        for p in ("weight", "bias"):
            assert torch.equal(bin_[f"model.mm_projector.{i}.{p}"], state[f"adapter.layers.{i}.{p}"])


def test_existing_target_is_refused_without_force_and_replaced_with_it(demo, tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="taken.*--force"):
        main([demo["ckpt"], str(target)])
    assert (target / "keep.txt").read_text() == "mine"
    main([demo["ckpt"], str(target), "--force"])
    assert not (target / "keep.txt").exists() and (target / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".taken.tmp")]


def test_checkpoint_from_another_config_is_refused(demo, tmp_path):
    with pytest.raises(ValueError, match="iter_2.pth.*does not fit"):
        main([demo["ckpt"], str(tmp_path / "x"), "--cfg-options", "model.llm.config.hidden_size=32",
              "model.llm.config.intermediate_size=64"])
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="nope.pth"):
        main([str(tmp_path / "nope.pth"), str(tmp_path / "y")])


# --------------------------------------------------------------------------- the mapping, tower by tower
@pytest.mark.parametrize("quick_gelu", [False, True])
def test_clip_mapping_equals_open_clip_at_every_block(quick_gelu):
    """A random open_clip ViT and the CLIPVisionModel built from the mapping agree after every block."""
    import open_clip
    from transformers import CLIPVisionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        visual = open_clip.create_model("alignkit-demo-vit", pretrained=None, quick_gelu=quick_gelu).visual.eval()
    cfg = clip_vision_config(visual)
    assert cfg.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
    hf = CLIPVisionModel(cfg).eval()
    hf.load_state_dict(clip_vision_state_dict(visual), strict=True)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    n = len(visual.transformer.resblocks)
    with torch.no_grad():
        ours = visual.forward_intermediates(images, indices=list(range(n)), output_fmt="NLC", intermediates_only=True,
                                            output_extra_tokens=True)
        hidden = hf(pixel_values=images, output_hidden_states=True).hidden_states  # embeddings, block 1..n
    for b in range(n):
        full = torch.cat([ours["image_intermediates_prefix"][b], ours["image_intermediates"][b]], dim=1)
        torch.testing.assert_close(hidden[b + 1], full, atol=1e-5, rtol=0)
        assert vision_feature_layer(b, n) == b - n and vision_feature_layer(b - n, n) == b - n


def test_non_clip_tower_is_refused():
    with pytest.raises(ValueError, match="SigLIP.*this is neither"):
        clip_vision_config(nn.Linear(2, 2))


# --------------------------------------------------------------------------- prompts
def test_chat_templates_render_alignkit_prompts():
    from transformers import PreTrainedTokenizerFast

    tok: PreTrainedTokenizerFast = metaspace_bpe_tokenizer()
    q = "What is this?"
    # LLaVA-1.5's conv_vicuna_v1 prompt, written out by hand
    assert generation_prompt("vicuna_v1", q) == VICUNA
    for messages in ([{"role": "user", "content": "<image>\n" + q}],  # what lmms-eval sends
                     [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]):
        got = tok.apply_chat_template(messages, chat_template=chat_template_for("vicuna_v1"), tokenize=False,
                                      add_generation_prompt=True)
        assert got == VICUNA
        plain = tok.apply_chat_template(messages, chat_template=chat_template_for("plain"), tokenize=False,
                                        add_generation_prompt=True)
        assert plain == "<image>" == generation_prompt("plain", q)
    turns = [{"role": "user", "content": "<image>\n" + q}, {"role": "assistant", "content": "A cat."},
             {"role": "user", "content": "Colour?"}]
    got = tok.apply_chat_template(turns, chat_template=chat_template_for("vicuna_v1"), tokenize=False,
                                  add_generation_prompt=True)
    assert got == VICUNA + " A cat.</s>USER: Colour? ASSISTANT:"
    llama3 = get_template("llama3")
    got = tok.apply_chat_template(messages, chat_template=chat_template_for(llama3), tokenize=False,
                                  add_generation_prompt=True)
    assert got == generation_prompt(llama3, q)


def test_export_fails_cleanly_on_a_file_target(demo, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="file"):
        main([demo["ckpt"], str(target), "--force"])
    assert target.read_text() == "x" and os.path.isfile(target)


@pytest.mark.parametrize("legacy", [True, False])
def test_sentencepiece_tokenizer_exports_with_the_same_prompt_ids(tmp_path, legacy):
    """alignkit's SentencePieceTokenizer (Vicuna's path) -> a transformers tokenizer giving the same prompt ids."""
    import sentencepiece as spm

    lines = [c for cs in DEMO_CAPTIONS.values() for c in cs] * 3 + [VICUNA.replace("<image>\n", "")] * 3
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "sp"), vocab_size=300,
                                   model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   remove_extra_whitespaces=False, normalization_rule_name="identity",  # Llama's
                                   minloglevel=2)
    tok = SentencePieceTokenizer(tmp_path / "sp.model", legacy=legacy)
    exported = hf_tokenizer(tok)
    for template in ("vicuna_v1", "plain"):
        check_prompt_ids(tok, exported, template, num_tokens=5)
    exported.backend_tokenizer.post_processor = None  # drops BOS: the check must notice
    with pytest.raises(ValueError, match="does not reproduce the 'vicuna_v1' prompt"):
        check_prompt_ids(tok, exported, "vicuna_v1", num_tokens=5)
