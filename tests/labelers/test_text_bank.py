"""Text bank: trimmed context is exact, the disk cache is reused, invalidated and never trusted blindly."""
import json
import os

import open_clip
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import alignkit.labelers.text_bank as tb
from alignkit.registry import LABELERS


@pytest.fixture(scope="module")
def clip64(tiny):
    """The tiny CLIP in float64, so 'equal' can mean 1e-10."""
    model = open_clip.create_model(tiny.VIT, pretrained=tiny.weights[tiny.VIT]).double().eval()
    return model, open_clip.get_tokenizer(tiny.VIT)


def test_trimmed_context_equals_full_context(clip64, tiny):
    model, tokenizer = clip64
    texts = tiny.words + ["a photo of a hippopotamus", "x"]
    tokens = tokenizer(texts)  # (N, 77), zero-padded, EOT = highest id
    length = tb.trimmed_length(model, tokens)
    # SOT + BPE pieces + EOT of the longest text, far below 77
    assert length == int((tokens != 0).sum(1).max()) and length < 16
    full = model.encode_text(tokens)  # open_clip's own forward at 77
    trimmed = tb.encode_text_tokens(model, tokens)
    torch.testing.assert_close(trimmed, full, atol=1e-10, rtol=0)
    # an independent batch trimmed to a shorter length gives the same rows
    short = tb.encode_text_tokens(model, tokens[:3])
    torch.testing.assert_close(short, full[:3], atol=1e-10, rtol=0)


def test_bidirectional_text_tower_is_not_trimmed(tiny):
    model = open_clip.create_model(tiny.MAP, pretrained=tiny.weights[tiny.MAP]).eval()
    tokens = open_clip.get_tokenizer(tiny.MAP)(tiny.words)
    # no causal mask + 'last' pooling: the pooled token sees the padding, so trimming would change it
    assert tb.trimmed_length(model, tokens) is None
    torch.testing.assert_close(tb.encode_text_tokens(model, tokens), model.encode_text(tokens))


def test_build_text_bank_is_normalised_and_in_word_order(clip64, tiny):
    model, tokenizer = clip64
    words = ["a photo of a hippopotamus"] + tiny.words  # longest first: sorting by length must be undone
    bank = tb.build_text_bank(model, tokenizer, words, prompt="{}", batch_size=7)
    expect = torch.nn.functional.normalize(model.encode_text(tokenizer(words)).float(), dim=-1)
    assert bank.shape == (len(words), 32) and bank.dtype == torch.float32
    torch.testing.assert_close(bank, expect, atol=1e-6, rtol=0)
    prompted = tb.build_text_bank(model, tokenizer, words[:3], prompt="a photo of a {}.")
    expect = model.encode_text(tokenizer([f"a photo of a {w}." for w in words[:3]])).float()
    torch.testing.assert_close(prompted, torch.nn.functional.normalize(expect, dim=-1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("prompt", ["no placeholder", "{} and {}", "{0}", 3])
def test_bad_prompt(prompt):
    with pytest.raises(ValueError, match="prompt"):
        tb.check_prompt(prompt)


class CountingEncoder:
    """Wraps the real text encoder and counts calls (a spy, not a stand-in)."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def spy(monkeypatch):
    counter = CountingEncoder(tb.encode_text_tokens)
    monkeypatch.setattr(tb, "encode_text_tokens", counter)
    return counter


def build(tiny, word_list, cache_dir, **kw):
    return LABELERS.build(dict(type="CLIPTopNLabeler", model_name=tiny.VIT, pretrained=tiny.weights[tiny.VIT],
                               word_list=word_list, cache_dir=str(cache_dir), top_n=3, device="cpu", **kw))


def test_cache_is_reused(tiny, word_file, tmp_path, spy):
    first = build(tiny, word_file, tmp_path)
    assert first.bank_info["built"] and spy.calls > 0
    path = first.bank_info["path"]
    mtime = os.stat(path).st_mtime_ns
    calls = spy.calls
    second = build(tiny, word_file, tmp_path)
    assert spy.calls == calls, "second construction ran the text tower"
    assert not second.bank_info["built"] and second.bank_info["path"] == path
    assert os.stat(path).st_mtime_ns == mtime
    assert torch.equal(first.bank, second.bank)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []  # temp files renamed away


def test_cache_invalidated_by_word_list_and_prompt(tiny, word_file, tmp_path, spy):
    base = build(tiny, word_file, tmp_path)
    other_words = tmp_path / "other.txt"
    other_words.write_text("\n".join(tiny.words[::-1]), encoding="utf-8")
    reordered = build(tiny, str(other_words), tmp_path)
    prompted = build(tiny, word_file, tmp_path, prompt="a photo of a {}.")
    paths = {base.bank_info["path"], reordered.bank_info["path"], prompted.bank_info["path"]}
    assert len(paths) == 3 and reordered.bank_info["built"] and prompted.bank_info["built"]
    # reversed list -> reversed bank rows; a prompt changes the features
    torch.testing.assert_close(reordered.bank, base.bank.flip(0))
    assert not torch.allclose(prompted.bank, base.bank)


def test_cache_invalidated_by_other_weights(tiny, word_file, tmp_path):
    base = build(tiny, word_file, tmp_path)
    other = tiny.save_weights(tiny.VIT, tmp_path / "other.bin", seed=1)
    rebuilt = LABELERS.build(dict(type="CLIPTopNLabeler", model_name=tiny.VIT, pretrained=other,
                                  word_list=word_file, cache_dir=str(tmp_path), top_n=3, device="cpu"))
    assert rebuilt.bank_info["built"] and rebuilt.bank_info["path"] != base.bank_info["path"]


def corrupt_garbage(path):
    with open(path, "wb") as f:
        f.write(b"not a safetensors file")


def corrupt_truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def corrupt_tensor(path):
    """Same metadata, different numbers: only the checksum can tell."""
    with safe_open(path, framework="pt") as f:
        meta, bank = f.metadata(), f.get_tensor("bank")
    save_file({"bank": bank + 1e-3}, path, metadata=meta)


def corrupt_key(path):
    """A valid file whose stored key belongs to another bank (stale)."""
    with safe_open(path, framework="pt") as f:
        meta, bank = f.metadata(), f.get_tensor("bank")
    save_file({"bank": bank}, path, metadata=dict(meta, key="0" * 64))


def corrupt_shape(path):
    with safe_open(path, framework="pt") as f:
        meta, bank = f.metadata(), f.get_tensor("bank")
    bank = bank[:-1].contiguous()
    save_file({"bank": bank}, path, metadata=dict(meta, shape=json.dumps(list(bank.shape)), sha256=tb._tensor_sha256(bank)))


@pytest.mark.parametrize("corrupt", [corrupt_garbage, corrupt_truncate, corrupt_tensor, corrupt_key, corrupt_shape])
def test_corrupt_or_stale_cache_is_rebuilt(tiny, word_file, tmp_path, spy, caplog, corrupt):
    good = build(tiny, word_file, tmp_path)
    corrupt(good.bank_info["path"])
    calls = spy.calls
    with caplog.at_level("WARNING", logger="alignkit.labelers.text_bank"):
        again = build(tiny, word_file, tmp_path)
    assert again.bank_info["built"] and spy.calls > calls
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(again.bank, good.bank)
    third = build(tiny, word_file, tmp_path)  # the rebuilt file is trusted again
    assert not third.bank_info["built"]


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(tb.CACHE_ENV, str(tmp_path))
    assert tb.default_cache_dir() == tmp_path / "text_banks"
    monkeypatch.delenv(tb.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tb.default_cache_dir() == tmp_path / "xdg" / "alignkit" / "text_banks"


def test_unwritable_cache_still_labels(tiny, word_file, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level("WARNING", logger="alignkit.labelers.text_bank"):
        lab = build(tiny, word_file, blocker / "sub")  # a path under a file cannot be created
    assert lab.bank.shape == (20, 32)
    assert any("could not write" in r.getMessage() for r in caplog.records)
