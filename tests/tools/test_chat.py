"""``tools/chat.py`` on the shared demo checkpoint, on CPU: greedy, sampling, multi-turn, URL images, the three
model sources (checkpoint, HF export folder, LLaVA projector + config) and argparse errors.

The greedy reference is a slow loop written here: the whole sequence through
``LLaVAModel(mode='tensor')`` once per new token, argmax of the last position,
stop at EOS — no cache, no ``generate``. The multi-turn prompt is written here
by hand in LLaVA's ``conv_vicuna_v1`` format.
"""
from __future__ import annotations

import functools
import http.server
import io
import os
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from alignkit.cli import chat
from alignkit.cli.chat import main
from alignkit.cli.common import load_model_and_source
from alignkit.cli.export_hf import main as export_hf
from alignkit.export.hf import image_processor_of, template_of
from alignkit.datasets.constants import IMAGE_TOKEN_INDEX
from alignkit.datasets.templates.presets import VICUNA_SYSTEM
from alignkit.models.llava_model import LLaVAModel

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "projects" / "sea" / "configs" / "demo_tiny.py")
N = 6


@pytest.fixture(scope="module")
def demo(demo_checkpoint):
    """The shared demo checkpoint (tests/tools/conftest.py) and a photograph."""
    return dict(base=demo_checkpoint["base"], ckpt=demo_checkpoint["ckpt"],
                image=str(demo_checkpoint["data"] / "images" / "coffee.png"))


@pytest.fixture(scope="module")
def reference(demo):
    """The greedy answer (N tokens) of the demo checkpoint to its plain prompt (<s> <image>), by the slow loop."""
    with torch.no_grad():
        model, cfg, _ = load_model_and_source(demo["ckpt"])
        model.autocast_dtype = None
        pixels = image_processor_of(cfg, model)(Image.open(demo["image"]).convert("RGB"))[None]
        tok = model.tokenizer
        ids = torch.tensor([[tok.bos_token_id, IMAGE_TOKEN_INDEX]])  # plain: BOS + the image, nothing else
        assert template_of(cfg).name == "plain"
        new = []
        for _ in range(N):
            t = int(model({"input_ids": ids, "images": pixels}, mode="tensor")[0, -1].argmax())
            if t == tok.eos_token_id:
                break
            new.append(t)
            ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
    return tok.decode(new, skip_special_tokens=True)


@pytest.fixture(scope="module")
def export_dir(demo):
    """The demo checkpoint exported by tools/export_hf.py (HF folder + mm_projector.bin)."""
    out = str(demo["base"] / "chat_export")
    if not os.path.isdir(out):
        export_hf([demo["ckpt"], out])
    return out


def ask(model_args, image, *extra):
    return main([*model_args, "--image", image, "--question", "What is on the table?", "--max-new-tokens", str(N),
                 *extra])


def test_greedy_answer_is_streamed_and_equals_the_reference(demo, reference, capsys):
    answer = ask([demo["ckpt"]], demo["image"], "--temperature", "0")
    captured = capsys.readouterr()
    assert answer.strip(), "no token was generated"
    assert captured.out.strip() == answer.strip()  # what was returned is what was printed
    assert "question is not used" in captured.err  # the demo is a stage-1 (plain template) model
    assert answer == reference
    assert ask([demo["ckpt"]], demo["image"]) == reference  # temperature 0 is the default


def test_sampling_is_reproducible_with_a_seed_and_not_greedy(demo, reference):
    hot = ["--temperature", "5", "--top-p", "1"]
    first = ask([demo["ckpt"]], demo["image"], *hot, "--seed", "1")
    assert ask([demo["ckpt"]], demo["image"], *hot, "--seed", "1") == first
    draws = [first] + [ask([demo["ckpt"]], demo["image"], *hot, "--seed", str(s)) for s in (2, 3)]
    assert any(d != reference for d in draws), "three draws at temperature 5 all equal the greedy answer"


def test_chat_over_stdin_keeps_the_conversation(demo, monkeypatch, capsys):
    seen = []
    real = LLaVAModel.generate

    def spy(self, input_ids, *args, **kwargs):
        seen.append(input_ids[0].tolist())
        return real(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(LLaVAModel, "generate", spy)
    stdin = io.StringIO("What is this?\n\nAnd the colour?\nexit\nnever read\n")
    answers = main([demo["ckpt"], "--image", demo["image"], "--template", "vicuna_v1", "--max-new-tokens", "4"],
                   stdin=stdin)
    assert len(answers) == 2 and len(seen) == 2  # the empty line is no turn; nothing after 'exit' is read
    assert capsys.readouterr().out.split("\n")[:2] == [a for a in answers]

    model, _, _ = load_model_and_source(demo["ckpt"])
    tok = model.tokenizer

    def ids(before_image, after_image):  # LLaVA's tokenizer_image_token, written out
        return ([tok.bos_token_id] + tok.encode(before_image, add_special_tokens=False) + [IMAGE_TOKEN_INDEX]
                + tok.encode(after_image, add_special_tokens=False))

    head = VICUNA_SYSTEM + " USER: "
    assert seen[0] == ids(head, "\nWhat is this? ASSISTANT:")
    assert seen[1] == ids(head, f"\nWhat is this? ASSISTANT: {answers[0].strip()}</s>USER: And the colour? ASSISTANT:")


@pytest.fixture
def http_root(demo):
    """A local HTTP server on 127.0.0.1 serving the demo images; it stops itself after the test."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(demo["image"].rsplit("/", 1)[0]))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda *a: None  # the size-cap case closes the connection mid-reply, on purpose
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_url_image_equals_the_local_file(demo, reference, http_root, capsys):
    assert ask([demo["ckpt"]], f"{http_root}/coffee.png") == reference
    with pytest.raises(SystemExit):
        ask([demo["ckpt"]], f"{http_root}/missing.png")
    err = capsys.readouterr().err
    assert "missing.png" in err and "cannot be downloaded" in err
    with pytest.raises(SystemExit):
        ask([demo["ckpt"]], f"{http_root}/coffee.png", "--max-image-mb", "0.001")
    assert "larger than" in capsys.readouterr().err


def test_hf_export_folder_chats_as_the_checkpoint(demo, export_dir, tmp_path):
    # 192 x 128: both resizes give 96 x 64 exactly. (On coffee.png, 256 x 171, transformers' CLIP resize gives
    # another width than alignkit's: the crop shifts one pixel and this random model's answer changes.)
    image = tmp_path / "coffee192.png"
    Image.open(demo["image"]).convert("RGB").resize((192, 128), Image.BICUBIC).save(image)
    ours = ask([demo["ckpt"]], str(image))
    assert ours.strip()
    assert ask([export_dir], str(image)) == ours


def test_llava_projector_with_config_chats_as_the_checkpoint(demo, reference, export_dir):
    projector = os.path.join(export_dir, "mm_projector.bin")
    assert ask(["--projector", projector, "--config", DEMO], demo["image"]) == reference


def test_chat_builds_no_labeler_and_no_text_bank(demo, reference, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(cache))
    built = []
    real = chat.build_model
    monkeypatch.setattr(chat, "build_model", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    assert ask([demo["ckpt"]], demo["image"]) == reference
    model = built[0]
    assert model.aligner is None and model.align_evaluator.labeler is None
    assert not any(name.startswith("aligner") for name, _ in model.named_modules() if name)
    assert not cache.exists() or not any(cache.rglob("*")), sorted(map(str, cache.rglob("*")))


@pytest.mark.parametrize("argv, message", [
    (["MISSING", "--image", "IMAGE"], "missing.pth.*does not exist"),
    (["CKPT", "--image", "NOIMAGE"], "nothere.png.*does not exist"),
    (["CKPT", "--image", "BROKEN"], "broken.png.*cannot be read as an image"),
    (["EMPTYDIR", "--image", "IMAGE"], "without config.json: not an HF export"),
    (["BERTDIR", "--image", "IMAGE"], "model_type 'bert'.*expected 'llava'"),
    (["CKPT", "--image", "IMAGE", "--temperature", "-1"], "--temperature must be >= 0"),
    (["CKPT", "--image", "IMAGE", "--top-p", "0"], r"--top-p must be in \(0, 1\]"),
    (["CKPT", "--image", "IMAGE", "--top-p", "1.5"], r"--top-p must be in \(0, 1\]"),
    (["--image", "IMAGE", "--projector", "CKPT"], "--projector needs --config"),
])
def test_bad_input_is_an_argparse_error(demo, tmp_path, capsys, argv, message):
    import re

    (tmp_path / "empty").mkdir()
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    names = dict(MISSING=str(tmp_path / "missing.pth"), CKPT=demo["ckpt"], IMAGE=demo["image"],
                 NOIMAGE=str(tmp_path / "nothere.png"), BROKEN=str(broken), EMPTYDIR=str(tmp_path / "empty"),
                 BERTDIR=str(tmp_path / "bert"))
    argv = [names.get(a, a) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err), argv


def test_checkpoint_of_another_model_is_named(demo):
    with pytest.raises(ValueError, match="iter_2.pth.*does not fit"):
        ask([demo["ckpt"]], demo["image"], "--cfg-options", "model.llm.config.num_hidden_layers=1")


def test_llava_projector_with_a_base_llm_folder(demo, reference, export_dir, tmp_path):
    """--llm: the config's LLM and tokenizer replaced by a folder (here: the checkpoint's LLM, saved)."""
    parser, args = chat.parse_args([demo["ckpt"], "--image", demo["image"]])
    model = chat.load_backend(args, parser).model
    model.llm.save_pretrained(tmp_path / "base_llm")
    model.tokenizer.save_pretrained(tmp_path / "base_llm")
    projector = os.path.join(export_dir, "mm_projector.bin")
    assert ask(["--projector", projector, "--config", DEMO, "--llm", str(tmp_path / "base_llm")],
               demo["image"]) == reference
