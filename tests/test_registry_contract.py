"""Every registered component is built from a config dict and meets its kind's contract.

timm-style: parametrised over the registries themselves (after
``import_from_location()``, or the listing is lazily empty and the test would
cover nothing), so a new component is covered the moment it registers — and
fails here until it has an entry in ``BUILD_CFGS`` below.
"""
import pytest
import torch

from alignkit import PairSet, PatchLabels
from alignkit.registry import ADAPTERS, ALIGN_LOSSES, ALIGNKIT_ROOTS, LABELERS, SAMPLERS

for _registry in ALIGNKIT_ROOTS.values():
    _registry.import_from_location()

# A minimal config for every registered class (labelers need a model: tests/labelers).
BUILD_CFGS = {
    "sampler": {
        "SimilarityWeightedSampler": dict(type="SimilarityWeightedSampler"),
        "WindowSampler": dict(type="WindowSampler", window=2),
        "DedupSampler": dict(type="DedupSampler"),
        "Compose": dict(
            type="Compose",
            samplers=[dict(type="SimilarityWeightedSampler"), dict(type="WindowSampler"), dict(type="DedupSampler")],
        ),
    },
    "align loss": {
        "InfoNCELoss": dict(type="InfoNCELoss"),
        "SigmoidLoss": dict(type="SigmoidLoss"),
    },
    "adapter": {
        "LinearAdapter": dict(type="LinearAdapter"),
        "MLPAdapter": dict(type="MLPAdapter"),
    },
}


def _registered(kind):
    return sorted(ALIGNKIT_ROOTS[kind].module_dict)


def test_registries_are_populated():
    # Guards against the lazy-listing trap: an empty registry would parametrise nothing.
    for kind in ("sampler", "align loss", "adapter", "labeler"):
        assert _registered(kind), f"registry {kind!r} lists nothing after import_from_location()"


@pytest.mark.parametrize("kind", ["sampler", "align loss", "adapter"])
def test_every_registered_class_has_a_build_config(kind):
    missing = set(_registered(kind)) - set(BUILD_CFGS[kind])
    assert not missing, f"add a build config for {sorted(missing)} to BUILD_CFGS"


def test_labelers_are_covered_by_their_own_tests():
    # Labelers need a (tiny) open_clip model to build; tests/labelers builds each from a dict.
    assert set(_registered("labeler")) >= {"CLIPTopNLabeler", "SigLIPTopNLabeler", "HFCLIPTopNLabeler",
                                          "HFSigLIPTopNLabeler"}


@pytest.mark.parametrize("name", _registered("sampler"))
def test_sampler_contract(name):
    sampler = SAMPLERS.build(BUILD_CFGS["sampler"][name])
    g = torch.Generator().manual_seed(0)
    B, H, W, K, V = 3, 5, 5, 4, 12
    scores, words = torch.rand(B, H * W, V, generator=g, dtype=torch.float64).sort(dim=-1, descending=True)
    labels = PatchLabels(words[..., :K], scores[..., :K], (H, W))
    pairs = PairSet.from_labels(labels)
    frozen = [t.clone() for t in (pairs.batch, pairs.patch, pairs.word, pairs.score)]
    out = sampler(pairs, labels.grid, torch.Generator().manual_seed(1))
    assert isinstance(out, PairSet) and 0 < len(out) <= len(pairs)
    rows_in = set(zip(pairs.batch.tolist(), pairs.patch.tolist(), pairs.word.tolist(), pairs.score.tolist()))
    rows_out = list(zip(out.batch.tolist(), out.patch.tolist(), out.word.tolist(), out.score.tolist()))
    assert set(rows_out) <= rows_in and len(set(rows_out)) == len(rows_out)
    # the caller's tensors are untouched
    for before, after in zip(frozen, (pairs.batch, pairs.patch, pairs.word, pairs.score)):
        assert torch.equal(before, after)
    # empty in, empty out
    assert len(sampler(PairSet.empty(), labels.grid, torch.Generator().manual_seed(0))) == 0


@pytest.mark.parametrize("name", _registered("align loss"))
@pytest.mark.parametrize("n", [0, 1, 7])
def test_align_loss_contract(name, n):
    loss_fn = ALIGN_LOSSES.build(BUILD_CFGS["align loss"][name])
    g = torch.Generator().manual_seed(n)
    visual = torch.randn(n, 16, generator=g, requires_grad=True)
    text = torch.randn(n, 16, generator=g, requires_grad=True)
    v0, t0 = visual.detach().clone(), text.detach().clone()
    loss = loss_fn(visual, text)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() >= 0
    loss.backward()  # a graph exists even for N = 0
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in loss_fn.parameters())
    assert torch.equal(visual.detach(), v0) and torch.equal(text.detach(), t0)
    assert isinstance(loss_fn.temperature, float) and loss_fn.temperature > 0


@pytest.mark.parametrize("name", _registered("adapter"))
@pytest.mark.parametrize("lead", [(5,), (2, 3), (2, 1, 4)])
def test_adapter_contract(name, lead):
    adapter = ADAPTERS.build(BUILD_CFGS["adapter"][name], default_args=dict(vision_dim=8, llm_dim=12))
    x = torch.randn(*lead, 8, generator=torch.Generator().manual_seed(0))
    assert adapter(x).shape == (*lead, 12)
    with pytest.raises(ValueError, match="8"):
        adapter(torch.randn(*lead, 9))
