"""SEAAligner on plain tensors (no Runner): the loss against an independent InfoNCE, λ, logging keys, drops."""
from __future__ import annotations

import math

import pytest
import torch

import alignkit.testing.demo  # noqa: F401  (registers the demo CLIP config)
from alignkit.labelers import CLIPTopNLabeler
from alignkit.models import OpenCLIPVisionEncoder, SEAAligner
from alignkit.registry import MODELS
from alignkit.structures import PairSet, PatchLabels
from alignkit.testing import byte_level_bpe_tokenizer, random_embedding
from alignkit.towers.open_clip import forward_features
from alignkit.word_table import build_word_table

# "" tokenizes to nothing: its word-table row is invalid, so its pairs must be dropped and counted.
WORDS = ["cat", "dog", "tree", "sky", "", "car", "road", "water"]
EMPTY_ID = WORDS.index("")
E = 16


def reference_infonce(x: torch.Tensor, t: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Eq. 9 written out in float64: mean of the two cross-entropies of s·cos."""
    x = x.double() / x.double().norm(dim=1, keepdim=True)
    t = t.double() / t.double().norm(dim=1, keepdim=True)
    logits = math.exp(logit_scale) * x @ t.T
    n = x.shape[0]
    i2t = -torch.log_softmax(logits, dim=1)[torch.arange(n), torch.arange(n)].mean()
    t2i = -torch.log_softmax(logits.T, dim=1)[torch.arange(n), torch.arange(n)].mean()
    return (i2t + t2i) / 2


def make_aligner(samplers=(), loss_weight=1.0, init_logit_scale=0.3) -> SEAAligner:
    aligner = MODELS.build(dict(
        type="SEAAligner", words=WORDS, samplers=list(samplers), loss_weight=loss_weight,
        loss=dict(type="InfoNCELoss", init_logit_scale=init_logit_scale),
    ))
    tok = byte_level_bpe_tokenizer()
    aligner.build_word_table(tok, random_embedding(len(tok), E, seed=1))
    return aligner


def make_labels(seed: int, b=2, h=4, w=4, k=3, empty_patches=0) -> PatchLabels:
    g = torch.Generator().manual_seed(seed)
    v = len(WORDS)
    words = torch.stack([torch.randperm(v, generator=g)[:k] for _ in range(b * h * w)]).reshape(b, h * w, k)
    scores = torch.rand(b, h * w, k, generator=g).sort(dim=-1, descending=True).values + 0.01
    if empty_patches:
        words[0, :empty_patches] = -1
        scores[0, :empty_patches] = 0
    return PatchLabels(words=words, scores=scores, grid=(h, w))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_equals_independent_infonce_on_all_pairs(seed):
    # No samplers: the pairs are every non-empty slot whose word is valid, in row-major order.
    aligner = make_aligner()
    labels = make_labels(seed)
    visual = torch.randn(2, 16, E, generator=torch.Generator().manual_seed(100 + seed))
    out = aligner(visual, labels=labels)

    keep = (labels.words != -1) & (labels.words != EMPTY_ID)  # (B, P, K)
    b, p, _ = keep.nonzero(as_tuple=True)
    x = visual[b, p]
    table = build_word_table(byte_level_bpe_tokenizer(), random_embedding(len(byte_level_bpe_tokenizer()), E, seed=1),
                             WORDS, on_empty="mask").table
    t = table[labels.words[keep]]
    expected = reference_infonce(x, t, 0.3)
    assert out["loss_align"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert out["align_pairs_invalid_word"].item() == int((labels.words == EMPTY_ID).sum())
    assert out["align_pairs_candidates"].item() == int((labels.words != -1).sum())


def test_loss_with_samplers_equals_reference_on_the_sampled_pairs():
    samplers = [dict(type="SimilarityWeightedSampler"), dict(type="WindowSampler", window=2),
                dict(type="DedupSampler")]
    aligner = make_aligner(samplers)
    labels = make_labels(5)
    visual = torch.randn(2, 16, E, generator=torch.Generator().manual_seed(7))
    out = aligner(visual, labels=labels, generator=torch.Generator().manual_seed(11))
    pairs, stats = aligner.sample(labels, torch.Generator().manual_seed(11))  # the same draws
    assert len(pairs) == out["align_pairs_after_dedup"].item() == stats["align_pairs_after_dedup"]
    assert len(set(pairs.word.tolist())) == len(pairs)  # dedup: one pair per word
    assert EMPTY_ID not in pairs.word.tolist()
    expected = reference_infonce(visual[pairs.batch, pairs.patch], aligner.word_table[pairs.word], 0.3)
    assert out["loss_align"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    # the counts only ever shrink, stage by stage
    counts = [stats[k] for k in ("align_pairs_after_similarity_weighted", "align_pairs_after_window",
                                 "align_pairs_after_dedup")]
    assert counts == sorted(counts, reverse=True)
    assert stats["align_pairs_after_similarity_weighted"] == 2 * 16  # one label per patch (all scores > 0)


def test_lambda_scales_the_loss_and_the_gradient():
    labels = make_labels(3)
    visual = torch.randn(2, 16, E, generator=torch.Generator().manual_seed(3), requires_grad=True)
    grads, losses = [], []
    for lam in (1.0, 2.5, 0.0):
        aligner = make_aligner(loss_weight=lam)
        visual.grad = None
        loss = aligner(visual, labels=labels)["loss_align"]
        loss.backward()
        losses.append(loss.item())
        grads.append(visual.grad.clone())
    assert losses[1] == pytest.approx(2.5 * losses[0], rel=1e-6)
    torch.testing.assert_close(grads[1], 2.5 * grads[0])
    assert losses[2] == 0.0 and not grads[2].abs().sum()


def test_logging_keys_never_contain_loss_and_are_tensors():
    out = make_aligner([dict(type="DedupSampler")])(torch.randn(2, 16, E), labels=make_labels(0, empty_patches=4))
    assert [k for k in out if "loss" in k] == ["loss_align"]
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in out.values())
    assert out["align_label_coverage"].item() == pytest.approx(1 - 4 / 32)  # 4 of 2×16 patches have no label
    assert out["align_temperature"].item() == pytest.approx(math.exp(-0.3), rel=1e-6)


def test_no_pairs_gives_a_finite_zero_with_a_graph():
    aligner = make_aligner()
    labels = PatchLabels(torch.full((1, 4, 2), -1), torch.zeros(1, 4, 2), (2, 2))
    visual = torch.randn(1, 4, E, requires_grad=True)
    out = aligner(visual, labels=labels)
    assert out["loss_align"].item() == 0.0 and out["loss_align"].requires_grad
    assert out["align_label_coverage"].item() == 0.0


def test_bad_inputs_raise_value_error_naming_the_argument():
    aligner = make_aligner()
    with pytest.raises(ValueError, match="dense"):
        aligner(torch.randn(2, 16, E))
    with pytest.raises(ValueError, match="visual"):
        aligner(torch.randn(2, 16, E + 1), labels=make_labels(0))
    with pytest.raises(ValueError, match="labels cover"):
        aligner(torch.randn(3, 16, E), labels=make_labels(0))
    with pytest.raises(ValueError, match="word_table"):
        SEAAligner(words=WORDS)(torch.randn(2, 16, E), labels=make_labels(0))
    with pytest.raises(ValueError, match="loss_weight"):
        SEAAligner(words=WORDS, loss_weight=-1.0)


def test_labels_from_the_encoders_dense_output_share_one_tower():
    """The labeler labels the wrapper's own dense output: same labels, same loss, one tower in memory."""
    labeler = CLIPTopNLabeler("alignkit-demo-vit", None, word_list=[w for w in WORDS if w], top_n=3, device="cpu")
    encoder = OpenCLIPVisionEncoder("alignkit-demo-vit", loaded=labeler.loaded)
    assert encoder.tower is labeler.visual
    assert (encoder.grid, encoder.vision_dim, encoder.embed_dim) == ((8, 8), 64, 32)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    features, dense = encoder(images)
    ref_feats, ref_dense = forward_features(labeler.visual, images, (-2,))
    torch.testing.assert_close(features, ref_feats[-2])
    torch.testing.assert_close(dense, labeler.encode_patches(images))
    assert not features.requires_grad  # frozen tower

    aligner = SEAAligner(labeler=labeler, samplers=[dict(type="SimilarityWeightedSampler")])
    tok = byte_level_bpe_tokenizer()
    aligner.build_word_table(tok, random_embedding(len(tok), E, seed=1))
    visual = torch.randn(2, 64, E, generator=torch.Generator().manual_seed(1))
    a = aligner(visual, dense=dense, generator=torch.Generator().manual_seed(4))
    b = aligner(visual, labels=labeler.label(dense), generator=torch.Generator().manual_seed(4))
    assert a["loss_align"].item() == b["loss_align"].item()


@pytest.fixture(scope="module")
def demo_labeler_aligner():
    from alignkit.labelers import CLIPTopNLabeler

    labeler = CLIPTopNLabeler("alignkit-demo-vit", None, word_list=[w for w in WORDS if w], top_n=3, device="cpu")
    aligner = SEAAligner(labeler=labeler, samplers=[dict(type="SimilarityWeightedSampler")])
    tok = byte_level_bpe_tokenizer()
    aligner.build_word_table(tok, random_embedding(len(tok), E, seed=1))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return labeler, aligner, labeler.encode_patches(images)  # dense (2, 64, C)


def test_patches_with_non_finite_dense_embeddings_get_no_label_and_are_counted(demo_labeler_aligner):
    labeler, aligner, dense = demo_labeler_aligner
    broken = dense.clone()
    broken[0, 5, 3] = float("nan")
    broken[1, 10, 0] = float("inf")
    # Expected: the clean labels, with those two patches emptied (rows are labelled independently).
    clean = labeler.label(dense)
    words, scores = clean.words.clone(), clean.scores.clone()
    for b, p in [(0, 5), (1, 10)]:
        words[b, p], scores[b, p] = -1, 0.0
    expected = PatchLabels(words=words, scores=scores, grid=clean.grid)
    visual = torch.randn(2, 64, E, generator=torch.Generator().manual_seed(1))
    out = aligner(visual, dense=broken, generator=torch.Generator().manual_seed(4))
    ref = aligner(visual, labels=expected, generator=torch.Generator().manual_seed(4))
    assert out["align_patches_nonfinite"].item() == 2
    assert out["loss_align"].item() == ref["loss_align"].item() and torch.isfinite(out["loss_align"])
    assert out["align_label_coverage"].item() == pytest.approx((expected.words[..., 0] != -1).float().mean().item())
    assert aligner(visual, dense=dense)["align_patches_nonfinite"].item() == 0


def test_all_non_finite_dense_embeddings_give_zero_loss_and_say_so(demo_labeler_aligner):
    _, aligner, dense = demo_labeler_aligner
    visual = torch.randn(2, 64, E, requires_grad=True)
    out = aligner(visual, dense=torch.full_like(dense, float("nan")))
    assert out["loss_align"].item() == 0.0 and out["loss_align"].requires_grad
    assert out["align_patches_nonfinite"].item() == 2 * 64  # the counter NonFinitePatchesHook warns about
    assert out["align_label_coverage"].item() == 0.0


def test_a_diverged_temperature_is_logged_as_inf_not_an_overflow():
    aligner = make_aligner(init_logit_scale=0.0)
    with torch.no_grad():
        aligner.loss.logit_scale.fill_(-1000.0)  # tau = e^1000: math.exp overflows a float
    assert aligner.loss.temperature == math.inf
    assert "tau=inf" in repr(aligner.loss)
    out = aligner(torch.randn(2, 16, E), labels=make_labels(0))
    assert out["align_temperature"].item() == math.inf
    assert torch.isfinite(out["loss_align"])  # s = e^-1000 = 0: every logit 0, the loss is ln N per side


def test_a_nan_temperature_is_named_by_the_loss_finite_check():
    aligner = make_aligner()
    with torch.no_grad():
        aligner.loss.logit_scale.fill_(float("nan"))
    assert math.isnan(aligner.loss.temperature)
    with pytest.raises(ValueError, match="NaN or inf"):
        aligner(torch.randn(2, 16, E), labels=make_labels(0))
