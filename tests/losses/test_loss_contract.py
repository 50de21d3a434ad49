"""The contract every registered align loss keeps (parametrised over ALIGN_LOSSES).

forward(visual (N, E), text (N, E)) -> 0-dim; finite with a graph for N = 0 and 1;
no NaN values or gradients for zero or identical rows; inputs never modified;
fp32 under bf16 autocast; bad input raises ValueError naming the argument.
"""

import math

import pytest
import torch
from helpers import pair

from alignkit.registry import ALIGN_LOSSES

ALIGN_LOSSES.import_from_location()  # the listing is lazy: import before parametrising
NAMES = sorted(ALIGN_LOSSES.module_dict)
CHUNKS = [None, 2]


def test_registry_lists_both_losses():
    assert {"InfoNCELoss", "SigmoidLoss"} <= set(NAMES)


def _build(name, chunk_size=None):
    return ALIGN_LOSSES.build(dict(type=name, chunk_size=chunk_size))


def _backward_all_finite(loss, x, t):
    value = loss(x, t)
    assert value.shape == () and value.requires_grad
    assert torch.isfinite(value)
    value.backward()
    for p in [x, t, *loss.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    return value


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_empty_batch_is_a_zero_with_a_graph(name, chunk_size):
    loss = _build(name, chunk_size)
    x, t = pair(0, 6, 0, dtype=torch.float32, requires_grad=True)
    value = _backward_all_finite(loss, x, t)
    assert value.item() == 0.0
    assert x.grad.shape == (0, 6)
    for p in loss.parameters():
        assert p.grad.item() == 0.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_single_pair_has_a_graph(name, chunk_size):
    loss = _build(name, chunk_size)
    x, t = pair(1, 5, 1, dtype=torch.float32, requires_grad=True)
    value = _backward_all_finite(loss, x, t)
    if name == "InfoNCELoss":
        assert value.item() == 0.0  # one candidate per softmax: −log 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("zero_rows", [[0], [0, 2], [0, 1, 2, 3]])
def test_zero_vectors_give_finite_values_and_gradients(name, chunk_size, zero_rows):
    loss = _build(name, chunk_size)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, generator=g)
    t = torch.randn(4, 3, generator=g)
    x[zero_rows] = 0
    t[zero_rows[:1]] = 0
    x.requires_grad_(True), t.requires_grad_(True)
    _backward_all_finite(loss, x, t)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_identical_rows_give_finite_gradients(name, chunk_size):
    loss = _build(name, chunk_size)
    x = torch.ones(5, 4).requires_grad_(True)
    t = torch.full((5, 4), -2.0).requires_grad_(True)
    value = _backward_all_finite(loss, x, t)
    if name == "InfoNCELoss":
        assert value.item() == pytest.approx(math.log(5), rel=1e-6)  # every logit equal


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_inputs_are_not_modified(name, chunk_size):
    loss = _build(name, chunk_size)
    x, t = pair(5, 4, 3, dtype=torch.float32, requires_grad=True)
    x_before, t_before = x.detach().clone(), t.detach().clone()
    versions = (x._version, t._version)
    loss(x, t).backward()
    assert torch.equal(x, x_before) and torch.equal(t, t_before)
    assert (x._version, t._version) == versions


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_fp32_under_bf16_autocast(name, chunk_size):
    loss = _build(name, chunk_size)
    x, t = pair(6, 8, 4, dtype=torch.float32, requires_grad=True)
    reference = loss(x, t)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = loss(x, t)
        # what a bf16 model hands over: bf16 tokens
        from_bf16 = loss(x.to(torch.bfloat16), t.to(torch.bfloat16))
    assert inside.dtype == torch.float32 and from_bf16.dtype == torch.float32
    assert inside.item() == reference.item()  # autocast is off inside: fp32 math exactly
    assert from_bf16.item() == pytest.approx(reference.item(), rel=2e-2)
    from_bf16.backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_module_cast_to_bf16_still_computes_in_fp32(name):
    loss = _build(name)
    x, t = pair(6, 8, 5, dtype=torch.float32, requires_grad=True)
    reference = loss(x, t).item()
    value = loss.to(torch.bfloat16)(x.to(torch.bfloat16), t.to(torch.bfloat16))
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference, rel=3e-2)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "shapes,word",
    [
        (((3, 4, 2), (3, 4)), r"visual must be a 2-D tensor of shape \(N, E\), got shape \(3, 4, 2\)"),
        (((3, 4), (4,)), r"text must be a 2-D tensor of shape \(N, E\), got shape \(4,\)"),
        (((3, 4), (3, 5)), r"visual \(3, 4\) and text \(3, 5\)"),
        (((3, 4), (2, 4)), r"visual \(3, 4\) and text \(2, 4\)"),
    ],
)
def test_bad_shapes_raise_naming_the_argument(name, shapes, word):
    loss = _build(name)
    with pytest.raises(ValueError, match=word):
        loss(torch.randn(*shapes[0]), torch.randn(*shapes[1]))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("which", ["visual", "text"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_raises_naming_the_argument(name, which, bad):
    loss = _build(name)
    tensors = {"visual": torch.randn(3, 4), "text": torch.randn(3, 4)}
    tensors[which][1, 2] = bad
    with pytest.raises(ValueError, match=rf"{which} contains NaN or inf \(shape \(3, 4\)\)"):
        loss(**tensors)


@pytest.mark.parametrize("name", NAMES)
def test_integer_or_non_tensor_input_raises(name):
    loss = _build(name)
    with pytest.raises(ValueError, match="visual must be floating point"):
        loss(torch.ones(3, 4, dtype=torch.long), torch.randn(3, 4))
    with pytest.raises(TypeError, match="text must be a torch.Tensor"):
        loss(torch.randn(3, 4), [[0.0] * 4] * 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_a_batch_gives_a_non_negative_finite_loss(name, chunk_size):
    loss = _build(name, chunk_size)
    x, t = pair(7, 16, 3, dtype=torch.float32, requires_grad=True)
    assert _backward_all_finite(loss, x, t).item() >= 0  # both are sums of −log(probability)


@pytest.mark.parametrize("name", NAMES)
def test_logging_properties_are_plain_floats(name):
    loss = _build(name)
    assert isinstance(loss.temperature, float) and isinstance(loss.logit_scale_value, float)
    assert loss.temperature == pytest.approx(math.exp(-loss.logit_scale_value))
