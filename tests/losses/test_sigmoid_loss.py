"""SigmoidLoss: matches the loop reference (alignkit/reference.py); learnable scale and bias, clamp, freezing."""

import math

import pytest
import torch
from helpers import pair

from alignkit import reference
from alignkit.registry import ALIGN_LOSSES



@pytest.mark.parametrize("n,e,seed", [(1, 3, 0), (2, 5, 1), (7, 4, 2), (13, 9, 3)])
@pytest.mark.parametrize("init_scale,init_bias", [(math.log(10), -10.0), (0.0, 0.0), (3.0, 2.5)])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_matches_loop_reference(n, e, seed, init_scale, init_bias, chunk_size):
    loss = ALIGN_LOSSES.build(
        dict(type="SigmoidLoss", init_logit_scale=init_scale, init_logit_bias=init_bias, chunk_size=chunk_size)
    ).double()
    x, t = pair(n, e, seed)
    # the parameters are stored in fp32: the reference uses the stored values
    expected = reference.sigmoid_loss(x, t, math.exp(loss.logit_scale.item()), loss.logit_bias.item())
    assert loss(x, t).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_siglip_defaults():
    loss = ALIGN_LOSSES.build(dict(type="SigmoidLoss"))
    assert loss.temperature == pytest.approx(0.1, rel=1e-6)  # s = 10
    assert loss.logit_bias_value == -10.0
    assert sorted(n for n, _ in loss.named_parameters()) == ["logit_bias", "logit_scale"]
    assert "logit_bias=-10" in repr(loss)


def test_scale_and_bias_get_gradients_matching_finite_differences():
    loss = ALIGN_LOSSES.build(dict(type="SigmoidLoss", init_logit_scale=1.2, init_logit_bias=-2.0)).double()
    x, t = pair(6, 4, 8)
    loss(x, t).backward()
    h, ls, b = 1e-6, loss.logit_scale.item(), loss.logit_bias.item()  # as stored in fp32
    fd_scale = (reference.sigmoid_loss(x, t, math.exp(ls + h), b) - reference.sigmoid_loss(x, t, math.exp(ls - h), b)) / (2 * h)
    fd_bias = (reference.sigmoid_loss(x, t, math.exp(ls), b + h) - reference.sigmoid_loss(x, t, math.exp(ls), b - h)) / (2 * h)
    assert loss.logit_scale.grad.item() == pytest.approx(fd_scale, rel=1e-6, abs=1e-9)
    assert loss.logit_bias.grad.item() == pytest.approx(fd_bias, rel=1e-6, abs=1e-9)


def test_frozen_scale_and_bias_are_buffers():
    loss = ALIGN_LOSSES.build(dict(type="SigmoidLoss", learnable=False))
    assert list(loss.parameters()) == []
    assert {"logit_scale", "logit_bias"} <= set(dict(loss.named_buffers()))
    x, t = pair(4, 3, 9, torch.float32)
    t.requires_grad_(True)
    loss(x, t).backward()
    assert loss.logit_scale.grad is None and loss.logit_bias.grad is None
    assert torch.isfinite(t.grad).all()


def test_scale_above_the_cap_behaves_like_the_cap():
    x, t = pair(5, 4, 10)
    loss = ALIGN_LOSSES.build(dict(type="SigmoidLoss", init_logit_bias=-1.0)).double()
    with torch.no_grad():
        loss.logit_scale.fill_(7.0)
    assert loss(x, t).item() == pytest.approx(reference.sigmoid_loss(x, t, 100.0, -1.0), rel=1e-12)
    loss(x, t).backward()
    assert loss.logit_scale.grad.item() == 0.0 and loss.logit_bias.grad.item() != 0.0
    free = ALIGN_LOSSES.build(
        dict(type="SigmoidLoss", init_logit_scale=7.0, init_logit_bias=-1.0, max_logit_scale=None)
    )
    assert free.double()(x, t).item() == pytest.approx(reference.sigmoid_loss(x, t, math.exp(7.0), -1.0), rel=1e-12)


def test_bad_bias_raises():
    with pytest.raises(ValueError, match="init_logit_bias"):
        ALIGN_LOSSES.build(dict(type="SigmoidLoss", init_logit_bias=float("-inf")))
