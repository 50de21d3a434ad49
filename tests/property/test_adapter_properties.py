"""Property tests of the adapters: shape contract, no mixing across rows, LLaVA equivalence.

Sizes, seeds and configs are drawn by hypothesis; weights and inputs come from
``torch.Generator().manual_seed(seed)`` and everything runs in float64.
"""
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from alignkit.registry import ADAPTERS

CONFIGS = [
    dict(type="LinearAdapter"),
    dict(type="LinearAdapter", bias=False),
    dict(type="MLPAdapter"),
    dict(type="MLPAdapter", depth=1),
    dict(type="MLPAdapter", depth=3, act="SiLU"),
    dict(type="MLPAdapter", depth=2, act="ReLU", hidden_dim=3),
    dict(type="MLPAdapter", depth=2, act="GELU", act_kwargs=dict(approximate="tanh")),
]

# The configs with a LLaVA mm_projector equivalent (linear, mlp<N>x_gelu).
LLAVA_CONFIGS = [
    dict(type="LinearAdapter"),
    dict(type="MLPAdapter"),
    dict(type="MLPAdapter", depth=1),
    dict(type="MLPAdapter", depth=3),
]

dims = st.integers(1, 6)
seeds = st.integers(0, 2**31 - 1)
leading_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def build(cfg, vision_dim, llm_dim, seed):
    """The adapter in float64 with every parameter redrawn from the seeded generator."""
    adapter = ADAPTERS.build(dict(cfg), default_args=dict(vision_dim=vision_dim, llm_dim=llm_dim)).double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return adapter, g


def test_every_registered_adapter_is_covered():
    ADAPTERS.import_from_location()
    assert ADAPTERS.module_dict, "no adapters registered"
    assert set(ADAPTERS.module_dict) <= {cfg["type"] for cfg in CONFIGS}, sorted(ADAPTERS.module_dict)


@given(cfg=st.sampled_from(CONFIGS), d=dims, e=dims, lead=leading_shapes, seed=seeds)
def test_leading_dims_preserved_and_flattening_commutes(cfg, d, e, lead, seed):
    adapter, g = build(cfg, d, e, seed)
    x = torch.randn(*lead, d, generator=g, dtype=torch.float64)
    y = adapter(x)
    assert y.shape == lead + (e,)
    assert y.dtype == torch.float64
    # Applying it to the flattened rows and unflattening gives the same tokens.
    torch.testing.assert_close(y, adapter(x.reshape(-1, d)).reshape(*lead, e))


@given(cfg=st.sampled_from(CONFIGS), d=dims, e=dims, lead=leading_shapes, seed=seeds, data=st.data())
def test_row_depends_only_on_its_own_input_row(cfg, d, e, lead, seed, data):
    adapter, g = build(cfg, d, e, seed)
    x = torch.randn(*lead, d, generator=g, dtype=torch.float64)
    rows = x.reshape(-1, d)
    r = rows.shape[0]
    i = data.draw(st.integers(0, r - 1), label="row kept")
    others = [j for j in range(r) if j != i]
    changed = rows.clone()
    if others:
        # Rewrite every other row; row i must come out bitwise unchanged.
        changed[others] = torch.randn(len(others), d, generator=g, dtype=torch.float64) * 10
    y = adapter(x).reshape(-1, e)
    y_changed = adapter(changed.reshape(x.shape)).reshape(-1, e)
    assert torch.equal(y[i], y_changed[i])
    # And row i is what the adapter gives for that row alone.
    torch.testing.assert_close(y[i], adapter(rows[i : i + 1])[0])


@given(cfg=st.sampled_from(CONFIGS), d=st.integers(1, 4), e=st.integers(1, 4), r=st.integers(2, 4), seed=seeds)
def test_jacobian_is_block_diagonal_over_rows(cfg, d, e, r, seed):
    adapter, g = build(cfg, d, e, seed)
    x = torch.randn(r, d, generator=g, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(adapter, x)  # (R, E, R, D)
    off_diagonal = ~torch.eye(r, dtype=torch.bool)  # (R, R)
    assert torch.all(jac.permute(0, 2, 1, 3)[off_diagonal] == 0)


@given(d=dims, e=dims, lead=leading_shapes, seed=seeds)
def test_mlp2x_gelu_equals_independent_reference(d, e, lead, seed):
    adapter, g = build(dict(type="MLPAdapter", depth=2, act="GELU"), d, e, seed)
    # LLaVA-1.5's mlp2x_gelu, written out: Linear(D, E) -> GELU -> Linear(E, E).
    reference = nn.Sequential(nn.Linear(d, e), nn.GELU(), nn.Linear(e, e)).double()
    linears = [m for m in adapter.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2
    with torch.no_grad():
        for ref, ours in zip([reference[0], reference[2]], linears, strict=True):
            ref.weight.copy_(ours.weight)
            ref.bias.copy_(ours.bias)
    x = torch.randn(*lead, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(adapter(x), reference(x), rtol=0, atol=0)
    # And by hand, without nn.Linear/nn.GELU: x W0ᵀ + b0, exact GELU via erf, then W2, b2.
    h = x @ reference[0].weight.T + reference[0].bias
    h = 0.5 * h * (1 + torch.erf(h / 2**0.5))
    torch.testing.assert_close(adapter(x), h @ reference[2].weight.T + reference[2].bias)


@given(cfg=st.sampled_from(LLAVA_CONFIGS), d=dims, e=dims, seed=seeds)
def test_llava_state_dict_round_trip(cfg, d, e, seed):
    src, g = build(cfg, d, e, seed)
    dst, _ = build(cfg, d, e, seed + 1)
    sd = src.to_llava_state_dict(prefix="model.mm_projector.")
    assert all(k.startswith("model.mm_projector.") for k in sd)
    dst.from_llava_state_dict(sd, prefix="model.mm_projector.")
    for (ka, va), (kb, vb) in zip(src.state_dict().items(), dst.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randn(3, d, generator=g, dtype=torch.float64)
    assert torch.equal(src(x), dst(x))
