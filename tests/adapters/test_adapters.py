"""Adapters: registry construction, the shape contract, LLaVA equivalence and state-dict interop, bad input."""
import re

import pytest
import torch
from torch import nn

from alignkit.adapters import ACTIVATIONS, BaseAdapter, LinearAdapter, MLPAdapter
from alignkit.registry import ADAPTERS

ADAPTERS.import_from_location()
ALL_ADAPTERS = sorted(ADAPTERS.module_dict)


def build(cfg, vision_dim=6, llm_dim=10):
    return ADAPTERS.build(cfg, default_args=dict(vision_dim=vision_dim, llm_dim=llm_dim))


def test_registry_lists_the_adapters():
    # Guards the parametrised tests below against silently covering nothing.
    assert {"LinearAdapter", "MLPAdapter"} <= set(ALL_ADAPTERS)


@pytest.mark.parametrize("name", ALL_ADAPTERS)
def test_contract_built_from_dict(name):
    """Every registered adapter: built from a dict + default_args, (..., D) -> (..., E), keeps dtype."""
    adapter = build(dict(type=name))
    assert isinstance(adapter, BaseAdapter)
    assert (adapter.vision_dim, adapter.llm_dim) == (6, 10)
    for shape in [(6,), (3, 6), (2, 5, 6), (2, 3, 4, 6), (0, 6)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        y = adapter(x)
        assert y.shape == shape[:-1] + (10,)
        assert y.dtype == x.dtype
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\).*got shape \(2, 7\)"):
        adapter(torch.zeros(2, 7))


@pytest.mark.parametrize("name", ALL_ADAPTERS)
def test_contract_gradients_reach_every_parameter(name):
    adapter = build(dict(type=name))
    adapter(torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(1))).square().sum().backward()
    for pname, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_config_arguments_reach_the_module():
    adapter = build(dict(type="MLPAdapter", depth=3, act="SiLU", hidden_dim=7))
    linears = [m for m in adapter.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 7), (7, 7), (7, 10)]
    assert [type(m) for m in adapter.layers[1::2]] == [nn.SiLU, nn.SiLU]
    assert build(dict(type="LinearAdapter", bias=False)).proj.bias is None


def test_mlp_default_matches_llava_mlp2x_gelu_reference():
    """Independent reference: LLaVA-1.5's mlp2x_gelu is Sequential(Linear(D, E), GELU(), Linear(E, E))."""
    torch.manual_seed(0)
    adapter = build(dict(type="MLPAdapter"), vision_dim=5, llm_dim=8).double()
    reference = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 8)).double()
    with torch.no_grad():
        lin0, lin2 = adapter.layers[0], adapter.layers[2]
        reference[0].weight.copy_(lin0.weight)
        reference[0].bias.copy_(lin0.bias)
        reference[2].weight.copy_(lin2.weight)
        reference[2].bias.copy_(lin2.bias)
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(adapter(x), reference(x), rtol=0, atol=0)


def test_linear_adapter_is_xwt_plus_b():
    adapter = build(dict(type="LinearAdapter"), vision_dim=3, llm_dim=2).double()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = x @ adapter.proj.weight.T + adapter.proj.bias
    torch.testing.assert_close(adapter(x), expected)


@pytest.mark.parametrize(
    "cfg, llava_type, keys",
    [
        (dict(type="LinearAdapter"), "linear", ["weight", "bias"]),
        (dict(type="MLPAdapter"), "mlp2x_gelu", ["0.weight", "0.bias", "2.weight", "2.bias"]),
        (dict(type="MLPAdapter", depth=3), "mlp3x_gelu", [f"{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]),
        (dict(type="MLPAdapter", depth=1, act="ReLU"), "mlp1x_gelu", ["0.weight", "0.bias"]),
    ],
)
def test_llava_state_dict_round_trip(cfg, llava_type, keys):
    src = build(cfg)
    assert src.llava_projector_type == llava_type
    prefix = "model.mm_projector."
    sd = src.to_llava_state_dict(prefix)
    assert list(sd) == [prefix + k for k in keys]
    # LLaVA's own layout loads the same tensors: build it the way LLaVA's builder does.
    if llava_type == "linear":
        llava = nn.Linear(6, 10)
    else:
        depth = int(llava_type[3])
        mods = [nn.Linear(6, 10)]
        for _ in range(1, depth):
            mods += [nn.GELU(), nn.Linear(10, 10)]
        llava = nn.Sequential(*mods)
    llava.load_state_dict({k[len(prefix):]: v for k, v in sd.items()}, strict=True)

    dst = build(cfg)  # fresh random weights
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(dst(x), src(x))
    # A whole checkpoint with unrelated keys: only the prefixed ones are read.
    checkpoint = {**{k: v.clone() for k, v in sd.items()}, "model.embed_tokens.weight": torch.zeros(3, 3)}
    dst.from_llava_state_dict(checkpoint, prefix=prefix)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    torch.testing.assert_close(llava(x), src(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "cfg",
    [
        dict(type="MLPAdapter", act="ReLU"),
        dict(type="MLPAdapter", hidden_dim=4),
        dict(type="MLPAdapter", act_kwargs=dict(approximate="tanh")),
        dict(type="LinearAdapter", bias=False),
    ],
)
def test_no_llava_equivalent_is_an_error(cfg):
    adapter = build(cfg)
    assert adapter.llava_projector_type is None
    with pytest.raises(ValueError, match="no LLaVA mm_projector equivalent"):
        adapter.to_llava_state_dict()
    with pytest.raises(ValueError, match="no LLaVA mm_projector equivalent"):
        adapter.from_llava_state_dict({})


def test_from_llava_state_dict_strict_reports_missing_keys():
    adapter = build(dict(type="MLPAdapter"))
    sd = adapter.to_llava_state_dict()
    del sd["2.bias"]
    with pytest.raises(RuntimeError, match="2.bias"):
        adapter.from_llava_state_dict(sd)


@pytest.mark.parametrize("act", ["GELU", "ReLU", "SiLU", "Tanh", "LeakyReLU"])
def test_activation_by_torch_class_name(act):
    adapter = MLPAdapter(4, 5, act=act)
    assert type(adapter.layers[1]) is getattr(nn, act)
    assert act in ACTIVATIONS


@pytest.mark.parametrize("act", ["gelu", "mlp2x_gelu", "GLU", "Softmax", "MultiheadAttention", "Linear", "", None])
def test_unknown_activation_lists_choices(act):
    with pytest.raises(ValueError, match=r"act must name a torch.nn activation, one of \[.*'GELU'.*'SiLU'"):
        MLPAdapter(4, 5, act=act)


def test_bad_activation_kwargs():
    with pytest.raises(ValueError, match="act_kwargs"):
        MLPAdapter(4, 5, act="ReLU", act_kwargs=dict(approximate="tanh"))


@pytest.mark.parametrize("depth", [0, -1, 1.5, "2", True])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match=f"depth must be an int >= 1.*got {depth!r}"):
        MLPAdapter(4, 5, depth=depth)


@pytest.mark.parametrize("cls", [LinearAdapter, MLPAdapter])
@pytest.mark.parametrize("arg, value", [("vision_dim", 0), ("llm_dim", -3), ("vision_dim", 2.0), ("llm_dim", None)])
def test_bad_widths(cls, arg, value):
    kwargs = dict(vision_dim=4, llm_dim=5)
    kwargs[arg] = value
    with pytest.raises(ValueError, match=f"{arg} must be an int >= 1, got {value!r}"):
        cls(**kwargs)


def test_bad_hidden_dim():
    with pytest.raises(ValueError, match=r"hidden_dim \(None = llm_dim\) must be an int >= 1, got 0"):
        MLPAdapter(4, 5, hidden_dim=0)


@pytest.mark.parametrize("x", [torch.tensor(1.0), torch.zeros(3, 5), torch.zeros(4, 1)])
def test_bad_input_names_expected_and_got(x):
    adapter = MLPAdapter(4, 5)
    expected = re.escape("(..., 4)") + ".*" + re.escape(f"got shape {tuple(x.shape)}")
    with pytest.raises(ValueError, match=expected):
        adapter(x)


def test_non_tensor_input():
    with pytest.raises(ValueError, match="expects a tensor"):
        LinearAdapter(4, 5)([[0.0] * 4])


def test_adapter_does_not_mutate_its_input():
    adapter = MLPAdapter(4, 5)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(5))
    before = x.clone()
    adapter(x)
    assert torch.equal(x, before)
