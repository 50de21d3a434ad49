"""``tools/chat.py``: a greedy, streamed answer about an image from the demo checkpoint, on CPU.

The reference is a slow greedy loop written here: the whole sequence through
``LLaVAModel(mode='tensor')`` once per new token, argmax of the last position,
stop at EOS — no cache, no ``generate``.
"""
from __future__ import annotations


import pytest
import torch
from PIL import Image

from alignkit.cli.chat import main, prompt_ids
from alignkit.cli.common import load_model_and_source
from alignkit.datasets.constants import IMAGE_TOKEN_INDEX
from alignkit.export.hf import image_processor_of, template_of



@pytest.fixture(scope="module")
def demo(demo_checkpoint):
    """The shared demo checkpoint (tests/tools/conftest.py) and a photograph."""
    base = demo_checkpoint["base"]
    return dict(base=base, ckpt=demo_checkpoint["ckpt"], image=str(demo_checkpoint["data"] / "images" / "coffee.png"))


@torch.no_grad()
def _reference_greedy(ckpt, image, n):
    model, cfg, _ = load_model_and_source(ckpt)
    model.autocast_dtype = None
    pixels = image_processor_of(cfg, model)(Image.open(image))[None]
    ids = prompt_ids(model.tokenizer, template_of(cfg), "anything")
    assert ids[0].tolist().count(IMAGE_TOKEN_INDEX) == 1
    new = []
    for _ in range(n):
        logits = model({"input_ids": ids, "images": pixels}, mode="tensor")  # (1, L, V)
        t = int(logits[0, -1].argmax())
        if t == model.tokenizer.eos_token_id:
            break
        new.append(t)
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
    return model.tokenizer.decode(new, skip_special_tokens=True)


def test_chat_streams_the_greedy_answer(demo, capsys):
    answer = main([demo["ckpt"], "--image", demo["image"], "--question", "What is on the table?",
                   "--max-new-tokens", "6"])
    captured = capsys.readouterr()
    assert answer.strip(), "no token was generated"
    assert captured.out.strip() == answer.strip()  # what was returned is what was printed
    assert "question is not used" in captured.err  # the demo is a stage-1 (plain template) model
    assert answer == _reference_greedy(demo["ckpt"], demo["image"], 6)


def test_missing_or_unreadable_image_is_named(demo, tmp_path):
    with pytest.raises(ValueError, match="nothere.png.*does not exist"):
        main([demo["ckpt"], "--image", str(tmp_path / "nothere.png")])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="broken.png.*cannot be read as an image"):
        main([demo["ckpt"], "--image", str(broken)])


def test_bad_checkpoint_is_named(demo, tmp_path):
    with pytest.raises(ValueError, match="missing.pth"):
        main([str(tmp_path / "missing.pth"), "--image", demo["image"]])
    with pytest.raises(ValueError, match="iter_2.pth.*does not fit"):
        main([demo["ckpt"], "--image", demo["image"], "--cfg-options", "model.llm.config.num_hidden_layers=1"])
