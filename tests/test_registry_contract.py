"""Every registered component is built from a config dict and meets its kind's contract.

timm-style: parametrised over the registries themselves (after
``import_from_location()``, or the listing is lazily empty and the test would
cover nothing), so a new component is covered the moment it registers — and
fails here until it has an entry in ``BUILD_CFGS`` below. The contracts
themselves live with their kind, one each: samplers in
``tests/samplers/test_samplers.py``, align losses in
``tests/losses/test_loss_contract.py``, adapters here.
"""
import pytest
import torch

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
def test_every_registered_class_builds_from_a_config(kind):
    missing = set(_registered(kind)) - set(BUILD_CFGS[kind])
    assert not missing, f"add a build config for {sorted(missing)} to BUILD_CFGS"
    registry = {"sampler": SAMPLERS, "align loss": ALIGN_LOSSES, "adapter": ADAPTERS}[kind]
    for name, cfg in BUILD_CFGS[kind].items():
        built = registry.build(dict(cfg), default_args=dict(vision_dim=8, llm_dim=12) if kind == "adapter" else None)
        assert type(built).__name__ == name


def test_labelers_are_covered_by_their_own_tests():
    # Labelers need a (tiny) open_clip model to build; tests/labelers builds each from a dict.
    assert set(_registered("labeler")) >= {"CLIPTopNLabeler", "SigLIPTopNLabeler", "HFCLIPTopNLabeler",
                                          "HFSigLIPTopNLabeler"}


@pytest.mark.parametrize("name", _registered("adapter"))
@pytest.mark.parametrize("lead", [(5,), (2, 3), (2, 1, 4)])
def test_adapter_contract(name, lead):
    adapter = ADAPTERS.build(BUILD_CFGS["adapter"][name], default_args=dict(vision_dim=8, llm_dim=12))
    x = torch.randn(*lead, 8, generator=torch.Generator().manual_seed(0))
    assert adapter(x).shape == (*lead, 12)
    with pytest.raises(ValueError, match="8"):
        adapter(torch.randn(*lead, 9))
