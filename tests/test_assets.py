"""alignkit.assets: the converted SmolLM2-135M-Instruct folder, and the errors when it cannot be had."""
import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from alignkit import assets


def test_converted_folder_is_a_plain_hf_model_that_answers(smollm2_dir, smollm2_tokenizer, smollm2_llm):
    folder = Path(smollm2_dir)
    marker = json.loads((folder / assets.MARKER).read_text())
    assert marker["sha256"] == assets.SMOLLM2_SHA256 and marker["source"] == assets.SMOLLM2_WHEEL
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # a plain folder, not a GGUF-backed one
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    # embedding 49,152 x 576 = 28,311,552; per layer q, o 576^2, k, v 576 x 192 (3 KV heads of 64), MLP 3 x 576 x 1536,
    # 2 norms of 576: 3,540,096, x 30 = 106,202,880; final norm 576; no separate head (tied): 134,515,008.
    assert sum(p.numel() for p in smollm2_llm.parameters()) == 134_515_008
    assert smollm2_llm.get_output_embeddings().weight.data_ptr() == smollm2_llm.get_input_embeddings().weight.data_ptr()
    # The real weights: greedy decoding answers a simple question correctly.
    tok = smollm2_tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = smollm2_llm.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)


def test_missing_asset_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path))
    with pytest.raises(assets.AssetMissing, match="python -m alignkit.assets smollm2"):
        assets.smollm2_path(convert=False)


def _fake_wheel(root: Path, content: bytes | None) -> None:
    package = root / assets.SMOLLM2_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    if content is not None:
        (package / assets.SMOLLM2_GGUF).write_bytes(content)


def test_wrong_gguf_is_refused_by_its_sha256_without_importing_the_package(tmp_path, monkeypatch):
    _fake_wheel(tmp_path, b"GGUF not the real one")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, assets.SMOLLM2_PACKAGE, raising=False)
    expected = hashlib.sha256(b"GGUF not the real one").hexdigest()
    with pytest.raises(ValueError, match=f"SHA-256 {expected}, expected {assets.SMOLLM2_SHA256}"):
        assets.smollm2_gguf()


def test_wheel_without_the_gguf_is_named(tmp_path, monkeypatch):
    _fake_wheel(tmp_path, None)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, assets.SMOLLM2_PACKAGE, raising=False)
    with pytest.raises(assets.AssetMissing, match=f"{assets.SMOLLM2_GGUF} does not exist"):
        assets.smollm2_gguf()
