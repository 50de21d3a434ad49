"""Alignment metrics: the pure functions on hand-built tensors, AlignmentMetric, and LLaVAModel's mode='align'.

Expected values come from constructions whose answer is known (a token equal
to its label's row ranks first), from expectations (random tokens rank
(V + 1) / 2 on average) or from loops written here.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from helpers import tiny_batch, tiny_model_cfg
from mmengine.config import Config

import alignkit.testing.demo  # noqa: F401  (registers the demo CLIP config and demo_tokenizer)
from alignkit.datasets.constants import IGNORE_INDEX
from alignkit.engine.metrics import (
    AlignmentMetric,
    label_cosine,
    label_ranks,
    label_retrieval,
    nearest_word_agreement,
    nearest_word_hits,
    nearest_words,
    tacs,
)
from alignkit.registry import METRICS, MODELS
from alignkit.structures import PatchLabels
from alignkit.testing.demo import write_demo_data
from alignkit.word_table import build_word_table

SEEDS = st.integers(0, 2**31 - 1)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- label retrieval
# E >= 4: in 2-D, two of 300 random rows can lie within fp32 rounding of each other (a true tie).
@given(v=st.integers(2, 300), n=st.integers(1, 60), e=st.integers(4, 24), chunk=st.integers(1, 400), seed=SEEDS)
def test_a_token_equal_to_its_label_row_ranks_first(v, n, e, chunk, seed):
    g = _gen(seed)
    table = torch.randn(v, e, generator=g)
    words = torch.randint(0, v, (n,), generator=g)
    scale = torch.rand(n, 1, generator=g) * 5 + 0.1  # cosine ignores the norm
    ranks = label_ranks(table[words] * scale, table, words, chunk_size=chunk)
    assert ranks.dtype == torch.long and torch.equal(ranks, torch.ones(n, dtype=torch.long))
    out = label_retrieval(table[words] * scale, table, words, chunk_size=chunk)
    assert out == {"label_top1": 1.0, "label_top5": 1.0, "label_mean_rank": 1.0}
    assert label_cosine(table[words] * scale, table, words) == pytest.approx(1.0, abs=1e-5)
    assert label_cosine(-table[words], table, words) == pytest.approx(-1.0, abs=1e-5)


@given(v=st.integers(2, 200), n=st.integers(1, 40), e=st.integers(2, 16), chunk=st.integers(1, 300), seed=SEEDS)
def test_ranks_match_a_sort_of_the_full_similarity_matrix(v, n, e, chunk, seed):
    g = _gen(seed)
    table, visual = torch.randn(v, e, generator=g), torch.randn(n, e, generator=g)
    words = torch.randint(0, v, (n,), generator=g)
    valid = torch.rand(v, generator=g) > 0.3
    sims = F.normalize(visual.double(), dim=-1) @ F.normalize(table.double(), dim=-1).T  # (N, V)
    ranks = label_ranks(visual, table, words, valid=valid, chunk_size=chunk)
    for i in range(n):  # reference: count the other valid rows above the label, with a band for fp32 rounding
        own = sims[i, words[i]]
        others = torch.ones(v, dtype=torch.bool)
        others[words[i]] = False
        others &= valid
        lo = 1 + int(((sims[i] > own + 1e-5) & others).sum())
        hi = 1 + int(((sims[i] > own - 1e-5) & others).sum())
        assert lo <= int(ranks[i]) <= hi
    ks = (1, 3, 7)
    out = label_retrieval(visual, table, words, ks=ks, valid=valid, chunk_size=chunk)
    for k in ks:
        assert out[f"label_top{k}"] == pytest.approx(sum(int(r) <= k for r in ranks) / n)
    assert out["label_mean_rank"] == pytest.approx(sum(int(r) for r in ranks) / n)
    cos = sum(float(sims[i, words[i]]) for i in range(n)) / n
    assert label_cosine(visual, table, words) == pytest.approx(cos, abs=1e-5)


@given(v=st.integers(10, 300), seed=SEEDS)
def test_random_tokens_rank_their_label_at_v_plus_one_over_two_on_average(v, seed):
    # Table rows i.i.d. and independent of the tokens: the label's rank is uniform on 1..V,
    # mean (V + 1) / 2, variance (V^2 - 1) / 12. Tolerance: 5 standard deviations of the mean.
    g = _gen(seed)
    n, e = 3000, 16
    table, visual = torch.randn(v, e, generator=g), torch.randn(n, e, generator=g)
    words = torch.randint(0, v, (n,), generator=g)
    out = label_retrieval(visual, table, words, chunk_size=64)
    sd = math.sqrt((v * v - 1) / 12 / n)
    assert abs(out["label_mean_rank"] - (v + 1) / 2) < 5 * sd
    p1 = 1 / v  # top-1 is a Bernoulli(1/V) share
    assert abs(out["label_top1"] - p1) < 5 * math.sqrt(p1 * (1 - p1) / n)


def test_an_invalid_row_never_outranks_a_label():
    table = torch.tensor([[1.0, 0.0], [0.8, 0.6], [1.0, 0.01]])
    visual = torch.tensor([[1.0, 0.0]])
    words = torch.tensor([1])
    assert int(label_ranks(visual, table, words)[0]) == 3  # rows 0 and 2 are nearer
    assert int(label_ranks(visual, table, words, valid=torch.tensor([True, True, False]))[0]) == 2
    assert int(label_ranks(visual, table, words, valid=torch.tensor([False, True, False]))[0]) == 1


def test_empty_input_gives_nan_not_an_error():
    table = torch.randn(5, 4)
    out = label_retrieval(torch.zeros(0, 4), table, torch.zeros(0, dtype=torch.long))
    assert all(math.isnan(x) for x in out.values())
    assert math.isnan(label_cosine(torch.zeros(0, 4), table, torch.zeros(0, dtype=torch.long)))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda t: label_ranks(torch.randn(3, 5), t, torch.tensor([0, 1, 2])), "width"),
        (lambda t: label_ranks(torch.randn(3, 4), t, torch.tensor([0, 1, 9])), "words.*0, V=6"),
        (lambda t: label_ranks(torch.randn(3, 4), t, torch.tensor([0, 1])), "words has 2"),
        (lambda t: label_ranks(torch.randn(3, 4), t, torch.tensor([0, 1, 2]), chunk_size=0), "chunk_size"),
        (lambda t: label_retrieval(torch.randn(3, 4), t, torch.tensor([0, 1, 2]), ks=(0,)), "ks"),
        (lambda t: nearest_words(torch.randn(3, 4, 1), t), "visual"),
        (lambda t: label_ranks(torch.randn(3, 4), t, torch.tensor([0, 1, 2]), valid=torch.ones(5, dtype=torch.bool)),
         "valid"),
        (lambda t: tacs(torch.randn(2, 3, 4), [torch.randn(2, 4)]), "2 images"),
        (lambda t: tacs(torch.randn(2, 3, 4), [torch.randn(2, 4)] * 2, top=0), "top"),
        (lambda t: tacs(torch.randn(2, 3, 4), torch.randn(2, 5, 3)), "caption_embeds"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(6, 4))


# ---------------------------------------------------------------------------- nearest word
@given(v=st.integers(1, 200), m=st.integers(1, 50), e=st.integers(2, 16), chunk=st.integers(1, 300), seed=SEEDS)
def test_nearest_words_is_the_argmax_of_the_full_matrix(v, m, e, chunk, seed):
    g = _gen(seed)
    table, visual = torch.randn(v, e, generator=g), torch.randn(m, e, generator=g)
    sims = F.normalize(visual.double(), dim=-1) @ F.normalize(table.double(), dim=-1).T
    ids, cos = nearest_words(visual, table, chunk_size=chunk)
    assert ids.dtype == torch.long and cos.dtype == torch.float32
    best = sims.max(-1).values
    # The chosen row is (within fp32 rounding) a best one, and its cosine is reported.
    assert torch.all(sims.gather(1, ids[:, None]).squeeze(1) >= best - 1e-5)
    assert torch.allclose(cos.double(), best, atol=1e-5)


def test_nearest_word_agreement_on_a_constructed_case():
    # Four words on the axes; tokens sit on words 0, 1, 2, 3, 0, 1 (B=1, P=6 as a 2x3 grid).
    table = torch.eye(4)
    visual = table[torch.tensor([0, 1, 2, 3, 0, 1])][None] * 2.0  # (1, 6, 4)
    words = torch.tensor([[[0, 2], [3, -1], [2, 1], [-1, -1], [1, 3], [1, -1]]])  # (1, 6, K=2)
    labels = PatchLabels(words, (words >= 0).float(), (2, 3))
    # labelled: patches 0, 1, 2, 4, 5 (patch 3 has no label); hits: 0 (0 in [0,2]), 2 (2 in [2,1]), 5 (1 in [1]).
    hit, labelled = nearest_word_hits(visual, table, labels)
    assert hit.tolist() == [[True, False, True, False, False, True]]
    assert labelled.tolist() == [[True, True, True, False, True, True]]
    assert nearest_word_agreement(visual, table, labels) == pytest.approx(3 / 5)
    # An invalid row is never nearest: with word 0 masked, the tokens on axis 0 (patches 0 and 4) are
    # orthogonal to every valid row and the tie goes to the lowest id, word 1: patch 0 misses, patch 4 hits.
    valid = torch.tensor([False, True, True, True])
    hit, _ = nearest_word_hits(visual, table, labels, valid=valid)
    assert hit.tolist() == [[False, False, True, False, True, True]]
    assert nearest_word_agreement(visual, table, labels, valid=valid) == pytest.approx(3 / 5)
    empty = PatchLabels(torch.full((1, 6, 2), -1), torch.zeros(1, 6, 2), (2, 3))
    assert math.isnan(nearest_word_agreement(visual, table, empty))


def test_nearest_token_agreement_over_a_vocabulary():
    # Vocabulary of 5 tokens; word 0 = tokens [1, 2], word 1 = token [4], word 2 = tokens [0, 3].
    vocab = torch.eye(5)
    word_tokens = torch.tensor([[1, 2], [4, -1], [0, 3]])
    visual = vocab[torch.tensor([2, 4, 3, 1])][None]  # nearest tokens 2, 4, 3, 1
    words = torch.tensor([[[0], [0], [2], [1]]])
    labels = PatchLabels(words, torch.ones(1, 4, 1), (2, 2))
    # token 2 is in word 0 (hit), 4 is not in word 0, 3 is in word 2 (hit), 1 is not in word 1.
    assert nearest_word_agreement(visual, vocab, labels, word_token_ids=word_tokens) == pytest.approx(2 / 4)


# ---------------------------------------------------------------------------- TACS
def _tacs_loop(visual, captions, top):
    """Independent reference: plain Python loops in float64."""
    out = []
    for b in range(visual.shape[0]):
        cap = captions[b]
        if cap.shape[0] == 0:
            out.append(float("nan"))
            continue
        best = []
        for p in range(visual.shape[1]):
            x = visual[b, p].double()
            cos = [float(x @ c.double() / (x.norm() * c.double().norm())) for c in cap]
            best.append(max(cos))
        best.sort(reverse=True)
        k = min(top, len(best))
        out.append(sum(best[:k]) / k)
    return out


@given(b=st.integers(1, 4), p=st.integers(1, 20), e=st.integers(2, 12), top=st.integers(1, 25), seed=SEEDS)
def test_tacs_matches_a_loop_in_both_input_forms(b, p, e, top, seed):
    g = _gen(seed)
    visual = torch.randn(b, p, e, generator=g)
    lengths = torch.randint(1, 9, (b,), generator=g).tolist()
    captions = [torch.randn(t, e, generator=g) for t in lengths]
    want = torch.tensor(_tacs_loop(visual, captions, top), dtype=torch.float64)
    got = tacs(visual, captions, top=top)
    assert got.shape == (b,) and got.dtype == torch.float32
    assert torch.allclose(got.double(), want, atol=1e-5)
    padded = torch.randn(b, max(lengths) + 2, e, generator=g) * 50  # padding must not count, however near
    mask = torch.zeros(b, max(lengths) + 2, dtype=torch.bool)
    for i, c in enumerate(captions):
        padded[i, : len(c)] = c
        mask[i, : len(c)] = True
    assert torch.allclose(tacs(visual, padded, mask, top=top).double(), want, atol=1e-5)


def test_tacs_known_values_and_an_empty_caption():
    # Image 0: tokens on the caption's first token (cos 1) and one orthogonal to the caption (cos 0).
    visual = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    captions = [torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.zeros(0, 3)]
    out = tacs(visual, captions, top=10)
    assert out[0] == pytest.approx(0.5) and math.isnan(float(out[1]))
    assert tacs(visual, captions, top=1)[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- AlignmentMetric
def test_alignment_metric_pools_over_patches_and_averages_tacs_over_images():
    metric = METRICS.build(dict(type="AlignmentMetric", ks=[1, 2]))
    assert isinstance(metric, AlignmentMetric) and metric.prefix == "align"
    batch1 = [
        dict(label_ranks=torch.tensor([1, 3]), label_cos=torch.tensor([0.5, 0.1]), agree_hits=1, agree_tokens=2,
             tacs=0.4),
        dict(label_ranks=torch.tensor([2]), label_cos=torch.tensor([0.3]), agree_hits=0, agree_tokens=1, tacs=0.2),
    ]
    batch2 = [dict(label_ranks=torch.zeros(0, dtype=torch.long), label_cos=torch.zeros(0), agree_hits=0,
                   agree_tokens=0, tacs=float("nan"))]
    metric.process(None, batch1)
    metric.process(None, batch2)
    out = metric.evaluate(size=3)
    assert out["align/label_top1"] == pytest.approx(1 / 3)
    assert out["align/label_top2"] == pytest.approx(2 / 3)
    assert out["align/label_mean_rank"] == pytest.approx(2.0)
    assert out["align/label_cosine"] == pytest.approx(0.3)
    assert out["align/nearest_word_agreement"] == pytest.approx(1 / 3)
    assert out["align/tacs"] == pytest.approx(0.3)  # the NaN of a caption without tokens is left out
    assert not any("loss" in k for k in out)


def test_alignment_metric_rejects_what_is_not_align_output():
    metric = AlignmentMetric()
    with pytest.raises(ValueError, match="mode='align'"):
        metric.process(None, [torch.tensor([1, 2])])
    with pytest.raises(ValueError, match="ks"):
        AlignmentMetric(ks=[0])


# ---------------------------------------------------------------------------- LLaVAModel mode='align'
WORDS = ["cat", "dog", "tree", "sky", "grass", "car", "road", "coffee", "cup", "rocket", "cloud", "water"]
LABELER = dict(type="CLIPTopNLabeler", word_list=list(WORDS), top_n=3)


def _model_cfg(aligner: bool, **extra) -> dict:
    # The shared tiny model (tests/helpers.py), in fp32, with an aligner that keeps one pair per word.
    cfg = tiny_model_cfg(aligner=aligner, autocast_dtype=None, **extra)
    if aligner:
        cfg["aligner"] = dict(type="SEAAligner", labeler=dict(LABELER), samplers=[dict(type="DedupSampler")])
    return cfg


def _batch(model, b=3, text_only_row=1, seed=0):
    """tests/helpers.tiny_batch with EOS-ended captions and no label on column 0 (the BOS), and each row's ids."""
    batch = tiny_batch(model, b, text_only_row, seed, eos=True)
    inputs = batch["inputs"]
    inputs["labels"][:, 0] = IGNORE_INDEX  # the BOS carries no label
    rows = [ids[mask].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
    return batch, rows


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "alignkit_cache"))


@pytest.fixture(scope="module")
def sea_model(tmp_path_factory):
    import os

    os.environ.setdefault("ALIGNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "alignkit_cache"))
    return MODELS.build(_model_cfg(aligner=True)).eval()


def test_align_mode_returns_what_the_functions_give_on_the_models_own_tokens(sea_model):
    model = sea_model
    data, rows = _batch(model)
    assert model.can_align_eval and model.align_evaluator.labeler is model.aligner.labeler
    assert model.align_evaluator.word_table is None  # the aligner's table is scored, not a copy
    out = model.val_step(data)
    assert len(out) == 2  # one per image row; the text-only row has none
    images = data["inputs"]["images"][data["inputs"]["has_image"]]
    visual, dense = model.encode_images(images)
    labels = model.aligner.labeler.label(dense)
    table = model.aligner.word_table
    special = set(model.tokenizer.all_special_ids)
    for i, (sample, row) in enumerate(zip(out, [r for j, r in enumerate(rows) if j != 1])):
        top1 = labels.words[i, :, 0]
        keep = top1 >= 0
        assert torch.equal(sample["label_ranks"], label_ranks(visual[i][keep], table, top1[keep]))
        assert float(sample["label_cos"].double().mean()) == pytest.approx(
            label_cosine(visual[i][keep], table, top1[keep]), abs=1e-5)
        hit, has = nearest_word_hits(visual[i: i + 1], table, labels[i: i + 1])
        assert (sample["agree_hits"], sample["agree_tokens"]) == (int(hit.sum()), int(has.sum()))
        caption = torch.tensor([t for t in row if t >= 0 and t not in special])  # no BOS, EOS or image slot
        embeds = model.llm.get_input_embeddings()(caption)
        assert sample["tacs"] == pytest.approx(float(tacs(visual[i: i + 1], [embeds])[0]), abs=1e-5)


def test_a_model_without_aligner_is_measured_with_align_eval_labeler():
    model = MODELS.build(_model_cfg(aligner=False, align_eval=dict(labeler=dict(LABELER)))).eval()
    assert model.aligner is None and model.can_align_eval
    assert model.align_evaluator.word_table.shape == (len(WORDS), 48)
    assert not any(n.startswith("align_evaluator") for n in model.state_dict())  # nothing new in checkpoints
    out = model.val_step(_batch(model)[0])
    assert len(out) == 2 and all(1 <= int(r) <= len(WORDS) for s in out for r in s["label_ranks"])
    vocab_model = MODELS.build(_model_cfg(aligner=False, align_eval=dict(labeler=dict(LABELER), agreement="vocab")))
    assert vocab_model.align_evaluator.word_tokens.shape[0] == len(WORDS)
    assert len(vocab_model.eval().val_step(_batch(vocab_model)[0])) == 2


def test_its_own_word_table_follows_the_llms_embeddings():
    model = MODELS.build(_model_cfg(aligner=False, align_eval=dict(labeler=dict(LABELER)))).eval()
    embed, evaluator = model.llm.get_input_embeddings(), model.align_evaluator
    assert not evaluator.refresh(model.tokenizer, embed)  # nothing changed: no rebuild
    state = {k: v.clone() for k, v in model.state_dict().items()}
    weight_key = next(k for k, v in model.state_dict().items() if v.data_ptr() == embed.weight.data_ptr())
    state[weight_key] = state[weight_key] * 2 + 1  # as a stage-2 checkpoint brings other embeddings
    model.load_state_dict(state)
    model.val_step(_batch(model)[0])  # validation scores against the loaded embeddings
    expected = build_word_table(model.tokenizer, embed, list(WORDS), on_empty="mask").table
    assert torch.equal(evaluator.word_table, expected)
    with torch.no_grad():
        embed.weight.add_(0.5)  # as an optimiser step does, in place
    assert evaluator.refresh(model.tokenizer, embed) and not evaluator.refresh(model.tokenizer, embed)
    assert torch.equal(evaluator.word_table, build_word_table(model.tokenizer, embed, list(WORDS), on_empty="mask").table)


def test_a_model_with_nothing_to_label_validates_by_generation():
    model = MODELS.build(_model_cfg(aligner=False, max_new_tokens=2)).eval()
    assert not model.can_align_eval
    out = model.val_step(_batch(model)[0])
    assert len(out) == 3 and all(isinstance(t, torch.Tensor) for t in out)


def test_align_eval_rejects_unknown_settings():
    with pytest.raises(ValueError, match="agreement"):
        MODELS.build(_model_cfg(aligner=False, align_eval=dict(agreement="all")))
    with pytest.raises(ValueError, match="unknown key"):
        MODELS.build(_model_cfg(aligner=False, align_eval=dict(top=3)))


# ---------------------------------------------------------------------------- configs
CONFIGS = Path(__file__).resolve().parents[2] / "projects" / "sea" / "configs"


def test_the_demo_validates_on_held_out_photographs(tmp_path):
    import json

    cfg = Config.fromfile(str(CONFIGS / "demo_tiny.py"))
    rows = json.loads(Path(write_demo_data(tmp_path)).read_text())
    # indices: first n rows for training, last m (m < 0) held out; disjoint, whole photographs on each side.
    n, m = cfg.train_dataloader.dataset.indices, cfg.val_dataloader.dataset.indices
    train, val = rows[:n], rows[m:]
    assert n > 0 > m and n - m <= len(rows)
    assert not {r["image"] for r in train} & {r["image"] for r in val}
    assert cfg.val_evaluator.type == "AlignmentMetric" and cfg.val_cfg.type == "ValLoop"
    assert 0 < cfg.train_cfg.val_interval <= cfg.train_cfg.max_iters
    assert cfg.model.align_eval.labeler == cfg.model.aligner.labeler  # one labeler, reused


def test_the_evaluation_base_turns_validation_on_for_a_real_leaf(tmp_path):
    leaf = tmp_path / "baseline_with_val.py"
    leaf.write_text(
        f"_base_ = [{str(CONFIGS / 'llava15_vicuna7b.py')!r}, {str(CONFIGS / '_base_/evaluation/alignment_val.py')!r}]\n"
        "train_cfg = dict(val_interval={{_base_.val_interval}})\n"
        "val_dataloader = dict(dataset=dict(tokenizer={{_base_.model.tokenizer}}))\n"
        "model = dict(align_eval=dict(labeler={{_base_.eval_labeler}}))\n"
    )
    cfg = Config.fromfile(str(leaf))
    assert cfg.train_cfg.val_interval == cfg.val_interval and cfg.train_cfg.max_iters == 2181
    assert cfg.val_dataloader.dataset.ann_file.endswith(".json") and cfg.val_dataloader.sampler.shuffle is False
    sea = Config.fromfile(str(CONFIGS / "vicuna7b.py"))
    assert cfg.model.align_eval.labeler == sea.model.aligner.labeler  # the baseline is scored on SEA's labels
    model = MODELS.build(dict(cfg.model, init_empty=True))
    assert model.aligner is None and model.align_evaluator.tacs_top == 10
