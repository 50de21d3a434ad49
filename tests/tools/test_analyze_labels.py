"""``tools/analyze_labels.py`` (the paper's Figure 6) on the embedded demo's photographs and CLIP.

A label cache is written by the real ``tools/extract_labels.py`` over the demo
data (the demo's random-weight CLIP under seed 0, a word list of the demo
captions' words); the tool's counts are checked against a ``Counter`` over
the cache's labels written here. The config route runs the same labeler under
the same seed, so it must count the very same labels.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import DEMO
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from alignkit.cli.analyze_labels import LabelStats, main
from alignkit.cli.extract_labels import main as extract
from alignkit.labelers.cache import MANIFEST, LabelCache
from alignkit.structures import EMPTY_WORD, PatchLabels
from alignkit.testing.demo import DEMO_CAPTIONS, write_demo_data

PLOTS = ("scores.png", "word_scores.png", "word_usage.png")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("labels")
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNKIT_DEMO_DATA", str(base / "data"))
    mp.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    ann = write_demo_data(base / "data")
    words = sorted({w for caps in DEMO_CAPTIONS.values() for c in caps for w in c.split()})
    word_file = base / "words.txt"
    word_file.write_text("\n".join(words) + "\n", encoding="utf-8")
    labeler = dict(type="CLIPTopNLabeler", model_name="alignkit-demo-vit", pretrained=None, word_list=str(word_file),
                   top_n=5)
    label_data = dict(ann_file=ann, image_folder=str(base / "data"), batch_size=8, num_workers=0, shard_size=5)
    config = base / "demo_labels.py"
    config.write_text(f"custom_imports = dict(imports=['alignkit.testing.demo'], allow_failed_imports=False)\n"
                      f"labeler = {labeler!r}\nlabel_data = {label_data!r}\n", encoding="utf-8")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the seed analyze_labels builds a config's labeler under (no `randomness` here)
        assert extract([str(config), "--out", str(base / "cache"), "--device", "cpu", "--no-progress"]) == 0
    yield dict(base=base, config=str(config), cache=base / "cache", words=words, images=base / "data" / "images")
    mp.undo()


def reference(cache_dir: Path):
    """Counts over every label slot of the cache, with a Counter (independent of LabelStats)."""
    cache = LabelCache(cache_dir)
    labels = cache.get_batch(cache.ids)
    w, s = labels.words.reshape(-1).tolist(), labels.scores.double().reshape(-1).tolist()
    count, total = Counter(), Counter()
    for word, score in zip(w, s):
        if word != EMPTY_WORD:
            count[word] += 1
            total[word] += score
    return cache, labels, count, total


def check_outputs(out: Path, summary: dict) -> None:
    for name in PLOTS:
        assert (out / name).stat().st_size > 0
        with Image.open(out / name) as im:
            im.load()
            assert min(im.size) > 200
    assert json.loads((out / "summary.json").read_text())["num_labels"] == summary["num_labels"]
    assert 0.0 <= summary["utilisation"] <= 1.0 and 0.0 <= summary["top1_utilisation"] <= summary["utilisation"]


def test_from_label_cache_counts_match_an_independent_count(demo, tmp_path):
    out = tmp_path / "fig6"
    summary = main([str(demo["cache"]), "--out", str(out), "--top-words", "8"])
    check_outputs(out, summary)
    cache, labels, count, total = reference(demo["cache"])
    v = len(demo["words"])
    assert summary["num_words"] == v and summary["num_images"] == len(cache)
    assert summary["num_labels"] == sum(count.values())
    assert summary["num_used_words"] == len(count)
    assert summary["utilisation"] == pytest.approx(len(count) / v)
    top1 = {int(x) for x in labels.words[..., 0].reshape(-1).tolist() if x != EMPTY_WORD}
    assert summary["num_top1_words"] == len(top1)
    most = summary["most_used"]
    assert [m["count"] for m in most] == sorted(count.values(), reverse=True)[:8]
    for m in most + summary["least_used"]:
        assert m["word"] == demo["words"][m["id"]]  # named from the word list the manifest records
        assert m["count"] == count[m["id"]]
        assert m["mean_score"] == pytest.approx(total[m["id"]] / count[m["id"]], abs=1e-9)
    assert [m["count"] for m in summary["least_used"]] == sorted(count.values())[:8]
    all_scores = [s for s, w in zip(labels.scores.reshape(-1).tolist(), labels.words.reshape(-1).tolist())
                  if w != EMPTY_WORD]
    assert summary["score"]["mean"] == pytest.approx(sum(all_scores) / len(all_scores), abs=1e-6)


def test_from_config_counts_the_same_labels_as_the_cache(demo, tmp_path):
    out = tmp_path / "fig6"
    summary = main([demo["config"], "--out", str(out)])
    check_outputs(out, summary)
    cache, _, count, _ = reference(demo["cache"])
    assert summary["num_images"] == len(cache) and summary["num_labels"] == sum(count.values())
    assert summary["num_used_words"] == len(count)
    assert [(m["id"], m["count"]) for m in summary["most_used"]] == [
        (m["id"], count[m["id"]]) for m in summary["most_used"]]


def test_from_the_demo_config_over_images_skips_and_counts_a_broken_one(demo, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    words = demo["base"] / "words.txt"
    images = [str(demo["images"] / "astronaut.png"), str(bad), str(demo["images"] / "coffee.png")]
    summary = main([DEMO, "--out", str(tmp_path / "o"), "--images", *images,
                    "--cfg-options", f"model.aligner.labeler.word_list={words}"])
    assert summary["num_images"] == 2 and summary["num_skipped"] == 1 and summary["skipped"][0]["path"] == str(bad)
    assert summary["num_patches"] == 2 * 64  # the demo ViT: an 8 x 8 grid
    assert summary["num_labels"] + summary["num_unlabelled_patches"] <= 2 * 64 * 10


def test_cache_that_does_not_match_is_refused_naming_the_field(demo, tmp_path):
    with pytest.raises(ValueError, match="top_n"):
        main([str(demo["cache"]), "--out", str(tmp_path / "o"), "--check-config", demo["config"],
              "--cfg-options", "labeler.top_n=3"])
    main([str(demo["cache"]), "--out", str(tmp_path / "ok"), "--check-config", demo["config"]])  # same labeler: fine
    bad = tmp_path / "bad_cache"
    bad.mkdir()
    for f in demo["cache"].rglob("*"):
        if f.is_file():
            (bad / f.relative_to(demo["cache"])).parent.mkdir(parents=True, exist_ok=True)
            (bad / f.relative_to(demo["cache"])).write_bytes(f.read_bytes())
    m = json.loads((bad / MANIFEST).read_text())
    m["layout"]["top_n"] = 7
    (bad / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="layout"):
        main([str(bad), "--out", str(tmp_path / "o2")])


def test_out_dir_with_files_is_refused_unless_force(demo, tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="--force"):
        main([str(demo["cache"]), "--out", str(tmp_path)])
    main([str(demo["cache"]), "--out", str(tmp_path), "--force"])
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "x.txt").is_file()
    with pytest.raises(ValueError, match="does not exist"):
        main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])


@given(b=st.integers(1, 4), p=st.integers(1, 6), k=st.integers(1, 4), v=st.integers(1, 9),
       split=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_label_stats_in_chunks_equals_a_counter(b, p, k, v, split, seed):
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(-1, v, (b, p, k), generator=g)
    scores = torch.where(words >= 0, torch.rand(b, p, k, generator=g, dtype=torch.float64) * 2 - 1, 0.0)
    stats = LabelStats(v, k)
    for i in range(0, b, split):  # any chunking gives the same counts
        stats.update(PatchLabels(words[i:i + split], scores[i:i + split], (1, p)))
    count, total = Counter(), Counter()
    for w, s in zip(words.reshape(-1).tolist(), scores.reshape(-1).tolist()):
        if w >= 0:
            count[w] += 1
            total[w] += s
    assert stats.word_count.tolist() == [count[i] for i in range(v)]
    means = stats.word_means()
    for i in range(v):
        assert (math.isnan(means[i]) if count[i] == 0 else means[i].item() == pytest.approx(total[i] / count[i]))
    assert stats.top1_count.tolist() == [int((words[..., 0] == i).sum()) for i in range(v)]
    assert stats.num_labels == sum(count.values()) and int(stats.hist.sum()) == stats.num_labels
    assert stats.num_unlabelled_patches == int((words == -1).all(-1).sum())
