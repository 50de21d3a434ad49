"""Hypothesis properties of the align losses, in float64 on seeded tensors.

Sizes N, E, a seed (and scale / bias / chunk where they matter) are drawn;
tensors come from ``torch.Generator().manual_seed(seed)``.

"log N at logit scale 0": at ln s = 0 the multiplier is s = 1, and the loss is
not log N in general. The exact statement is about the multiplier: s → 0 makes
every logit equal, so each softmax is uniform over N and the loss is log N. We
test it three ways: the functional at ``scale=0``, the module with ``ln s``
so negative that exp underflows to exactly 0, and identical rows (all cosines
equal) at any scale.
"""

import math

import torch
from helpers import pair
from hypothesis import assume, given
from hypothesis import strategies as st

from alignkit.losses.functional import info_nce, sigmoid_pairwise
from alignkit.registry import ALIGN_LOSSES

NAMES = ("InfoNCELoss", "SigmoidLoss")
sizes = st.integers(min_value=1, max_value=8)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
names = st.sampled_from(NAMES)
chunks = st.sampled_from([None, 1, 2, 3, 5])
log_scales = st.floats(min_value=-3.0, max_value=math.log(100))
biases = st.floats(min_value=-10.0, max_value=10.0)


def _loss(name, log_scale=None, bias=None, chunk_size=None):
    loss = ALIGN_LOSSES.build(dict(type=name, chunk_size=chunk_size)).double()
    with torch.no_grad():
        if log_scale is not None:
            loss.logit_scale.fill_(log_scale)
        if bias is not None and name == "SigmoidLoss":
            loss.logit_bias.fill_(bias)
    return loss


def _softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _close(a, b, tol=1e-11):
    a, b = (v.item() if isinstance(v, torch.Tensor) else float(v) for v in (a, b))
    assert abs(a - b) <= tol * max(1.0, abs(a), abs(b)), (a, b)


@given(name=names, n=sizes, e=sizes, seed=seeds, log_scale=log_scales, bias=biases, chunk=chunks)
def test_non_negative(name, n, e, seed, log_scale, bias, chunk):
    # every term is −log of a probability (softmax entry or sigmoid)
    x, t = pair(n, e, seed)
    assert _loss(name, log_scale, bias, chunk)(x, t).item() >= 0.0


@given(name=names, n=sizes, e=sizes, seed=seeds, log_scale=log_scales, bias=biases, data=st.data())
def test_invariant_to_permuting_the_pairs_jointly(name, n, e, seed, log_scale, bias, data):
    x, t = pair(n, e, seed)
    perm = torch.tensor(data.draw(st.permutations(range(n))), dtype=torch.long)
    loss = _loss(name, log_scale, bias)
    _close(loss(x[perm], t[perm]), loss(x, t))


@given(name=names, n=sizes, e=sizes, seed=seeds, log_scale=log_scales, bias=biases)
def test_symmetric_in_its_two_arguments(name, n, e, seed, log_scale, bias):
    # swapping the modalities transposes the logits; InfoNCE averages both
    # directions and the sigmoid loss sums all entries with a symmetric label matrix
    x, t = pair(n, e, seed)
    loss = _loss(name, log_scale, bias)
    _close(loss(x, t), loss(t, x))


@given(n=sizes, e=sizes, seed=seeds, chunk=chunks)
def test_info_nce_is_log_n_when_the_multiplier_is_zero(n, e, seed, chunk):
    x, t = pair(n, e, seed)
    _close(info_nce(x, t, 0.0, chunk_size=chunk), math.log(n), 1e-13)
    loss = _loss("InfoNCELoss", -1e4, chunk_size=chunk)  # exp(−1e4) underflows to 0
    assert loss.scale().item() == 0.0
    _close(loss(x, t), math.log(n), 1e-13)


@given(n=sizes, e=sizes, seed=seeds, log_scale=log_scales, chunk=chunks)
def test_info_nce_is_log_n_for_identical_rows_at_any_scale(n, e, seed, log_scale, chunk):
    x, t = pair(1, e, seed)
    assume(x.norm() > 1e-3 and t.norm() > 1e-3)
    x, t = x.expand(n, e), t.expand(n, e)  # every cosine equal
    _close(_loss("InfoNCELoss", log_scale, chunk_size=chunk)(x, t), math.log(n))


@given(n=sizes, e=sizes, seed=seeds, bias=biases, chunk=chunks)
def test_sigmoid_at_zero_multiplier_is_the_bias_alone(n, e, seed, bias, chunk):
    # s = 0: every logit is b; N positives cost softplus(−b), N² − N negatives softplus(b), / N
    x, t = pair(n, e, seed)
    expected = (n - 1) * _softplus(bias) + _softplus(-bias)
    _close(sigmoid_pairwise(x, t, 0.0, bias, chunk_size=chunk), expected)


@given(
    name=names,
    n=st.integers(min_value=1, max_value=8),
    e=st.integers(min_value=3, max_value=8),
    seed=seeds,
    log_scale=st.floats(min_value=-2.0, max_value=math.log(10)),
    bias=st.floats(min_value=-5.0, max_value=5.0),
    alpha=st.floats(min_value=0.1, max_value=1.0),
    data=st.data(),
)
def test_aligning_one_pair_lowers_the_loss(name, n, e, seed, log_scale, bias, alpha, data):
    # Moving x_i towards t_i also changes cos(x_i, t_j) and cos(x_j, t_i), which
    # can raise the loss for arbitrary inputs, so "more aligned ⇒ lower loss"
    # is not a theorem in general. It is when pair i lives in a private
    # subspace (the first 2 coordinates, which no other row uses): then only
    # cos(x_i, t_i) moves, and ∂L/∂cos_ii < 0 for s > 0 (strictly for InfoNCE
    # when N ≥ 2; for the sigmoid loss always).
    assume(name == "SigmoidLoss" or n >= 2)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    x, t = pair(n, e, seed)
    others = torch.arange(n) != i
    x[i, 2:], t[i, 2:] = 0, 0
    x[others, :2], t[others, :2] = 0, 0
    x_hat, t_hat = x[i] / x[i].norm(), t[i] / t[i].norm()
    cos_before = float(x_hat @ t_hat)
    assume(cos_before < 1 - 1e-6)
    moved = x.clone()
    moved[i] = (1 - alpha) * x_hat + alpha * t_hat
    assert float(moved[i] @ t_hat) / float(moved[i].norm()) > cos_before
    loss = _loss(name, log_scale, bias)
    assert loss(moved, t).item() < loss(x, t).item()


@given(
    name=names,
    n=st.integers(min_value=0, max_value=6),
    e=sizes,
    seed=seeds,
    chunk=chunks,
    case=st.sampled_from(["random", "identical", "zero", "some_zero"]),
)
def test_gradients_finite_for_degenerate_inputs(name, n, e, seed, chunk, case):
    x, t = pair(n, e, seed)
    if case == "identical":
        x, t = x[:1].expand(n, e).clone(), t[:1].expand(n, e).clone()
    elif case == "zero":
        x, t = torch.zeros_like(x), torch.zeros_like(t)
    elif case == "some_zero":
        x[::2] = 0
        t[1::3] = 0
    x.requires_grad_(True), t.requires_grad_(True)
    loss = _loss(name, chunk_size=chunk)
    value = loss(x, t)
    assert torch.isfinite(value)
    value.backward()
    for g in [x.grad, t.grad, *(p.grad for p in loss.parameters())]:
        assert g is not None and torch.isfinite(g).all()


@given(name=names, n=st.integers(min_value=0, max_value=8), e=sizes, seed=seeds, chunk=chunks)
def test_inputs_not_mutated(name, n, e, seed, chunk):
    x, t = pair(n, e, seed)
    x.requires_grad_(True), t.requires_grad_(True)
    x_copy, t_copy = x.detach().clone(), t.detach().clone()
    versions = (x._version, t._version)
    _loss(name, chunk_size=chunk)(x, t).backward()
    assert torch.equal(x.detach(), x_copy) and torch.equal(t.detach(), t_copy)
    assert (x._version, t._version) == versions


@given(name=names, n=sizes, e=sizes, seed=seeds, log_scale=st.floats(min_value=-2.0, max_value=2.0))
def test_bf16_autocast_gives_fp32_close_to_fp32(name, n, e, seed, log_scale):
    x, t = (v.float() for v in pair(n, e, seed))
    loss = _loss(name, log_scale).float()
    reference = loss(x, t)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = loss(x.to(torch.bfloat16), t.to(torch.bfloat16))
    assert value.dtype == torch.float32
    # bf16 rounding of the inputs (8 bits of mantissa) moves each cosine by ~1e-2 at most
    assert abs(value.item() - reference.item()) <= 0.05 * max(1.0, abs(reference.item()))


@given(
    name=names,
    n=st.integers(min_value=1, max_value=12),
    e=sizes,
    seed=seeds,
    log_scale=log_scales,
    bias=biases,
    data=st.data(),
)
def test_chunked_equals_full(name, n, e, seed, log_scale, bias, data):
    chunk = data.draw(st.integers(min_value=1, max_value=n))
    x, t = pair(n, e, seed)
    results = []
    for chunk_size in (None, chunk):
        loss = _loss(name, log_scale, bias, chunk_size)
        xr, tr = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
        value = loss(xr, tr)
        results.append((value.detach(), torch.autograd.grad(value, [xr, tr, *loss.parameters()])))
    (v_full, g_full), (v_chunk, g_chunk) = results
    torch.testing.assert_close(v_chunk, v_full, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_chunk, g_full):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
