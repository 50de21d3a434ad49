"""The chunked path (row blocks, custom autograd) equals the full N×N path in value and gradients."""

import math

import pytest
import torch
from helpers import pair, value_and_grads

from alignkit.losses.functional import AUTO_BLOCK_ELEMENTS, info_nce, resolve_chunk_size, sigmoid_pairwise
from alignkit.registry import ALIGN_LOSSES


@pytest.mark.parametrize("name,kwargs", [("InfoNCELoss", dict(init_logit_scale=2.0)), ("SigmoidLoss", {})])
@pytest.mark.parametrize("n,chunk", [(11, 4), (11, 1), (11, 10), (12, 5), (3, 2), (7, 7), (7, 100)])
def test_chunked_equals_full_in_float64(name, kwargs, n, chunk):
    full = ALIGN_LOSSES.build(dict(type=name, **kwargs)).double()
    chunked = ALIGN_LOSSES.build(dict(type=name, chunk_size=chunk, **kwargs)).double()
    x, t = pair(n, 6, n * 100 + chunk)
    value_full, grads_full = value_and_grads(full, x, t)
    value_chunked, grads_chunked = value_and_grads(chunked, x, t)
    torch.testing.assert_close(value_chunked, value_full, rtol=1e-12, atol=1e-12)
    assert len(grads_full) == len(grads_chunked)
    for a, b in zip(grads_chunked, grads_full):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", ["info_nce", "sigmoid_pairwise"])
def test_chunked_equals_full_with_large_logits_and_partial_grads(fn):
    # s = 100 puts logits at ±100: the block-wise log-sum-exps must not overflow
    x, t = pair(10, 4, 5)
    t = 0.9 * x + 0.1 * t  # well-aligned pairs, large positives
    scale = torch.tensor(100.0, dtype=torch.float64, requires_grad=True)
    extra = (torch.tensor(-3.0, dtype=torch.float64, requires_grad=True),) if fn == "sigmoid_pairwise" else ()
    f = info_nce if fn == "info_nce" else sigmoid_pairwise
    xr = x.clone().requires_grad_(True)  # t needs no gradient: the Function must cope
    full = f(xr, t, scale, *extra)
    g_full = torch.autograd.grad(full, [xr, scale, *extra])
    chunked = f(xr, t, scale, *extra, chunk_size=3)
    g_chunked = torch.autograd.grad(chunked, [xr, scale, *extra])
    assert torch.isfinite(full)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_chunked, g_full):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_chunked_backward_with_a_non_unit_upstream_gradient():
    x, t = pair(9, 5, 6)
    x.requires_grad_(True)
    (3.5 * info_nce(x, t, 4.0, chunk_size=2)).backward()
    g_chunked = x.grad.clone()
    x.grad = None
    (3.5 * info_nce(x, t, 4.0)).backward()
    torch.testing.assert_close(g_chunked, x.grad, rtol=1e-10, atol=1e-12)


def test_auto_chunk_size():
    assert resolve_chunk_size("auto", 100) is None  # small N: the full matrix is cheap
    n = 36_864  # one stage-1 global batch of pairs
    assert resolve_chunk_size("auto", n) == AUTO_BLOCK_ELEMENTS // n
    assert resolve_chunk_size(None, n) is None and resolve_chunk_size(n, n) is None
    assert resolve_chunk_size(4096, n) == 4096
    with pytest.raises(ValueError, match="chunk_size"):
        resolve_chunk_size(0, n)


def test_functional_accepts_a_plain_float_scale():
    x, t = pair(4, 3, 7)
    assert info_nce(x, t, 0.0).item() == pytest.approx(math.log(4), rel=1e-14)
    with pytest.raises(ValueError, match="scale must be a scalar"):
        info_nce(x, t, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="bias contains NaN"):
        sigmoid_pairwise(x, t, 1.0, float("nan"))
