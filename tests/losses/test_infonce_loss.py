"""InfoNCELoss: matches the loop reference of Eq. 9 (alignkit/reference.py); temperature parameter, clamp, freezing, errors."""

import math

import pytest
import torch
from helpers import pair

from alignkit import reference
from alignkit.registry import ALIGN_LOSSES



@pytest.mark.parametrize("n,e,seed", [(1, 3, 0), (2, 5, 1), (7, 4, 2), (13, 9, 3)])
@pytest.mark.parametrize("init", [0.0, math.log(1 / 0.07), -1.5])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_matches_loop_reference(n, e, seed, init, chunk_size):
    loss = ALIGN_LOSSES.build(dict(type="InfoNCELoss", init_logit_scale=init, chunk_size=chunk_size)).double()
    x, t = pair(n, e, seed)
    # the parameter is stored in fp32: the reference uses the stored value of ln s
    expected = reference.info_nce(x, t, math.exp(loss.logit_scale.item()))
    assert loss(x, t).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_matches_reference_with_unnormalised_scaled_rows():
    # normalisation happens inside: scaling a row by a positive factor changes nothing
    x, t = pair(6, 5, 11)
    scaled = x * torch.tensor([0.01, 1.0, 3.0, 100.0, 7.0, 0.5], dtype=torch.float64)[:, None]
    loss = ALIGN_LOSSES.build(dict(type="InfoNCELoss", init_logit_scale=1.0)).double()
    assert loss(scaled, t).item() == pytest.approx(loss(x, t).item(), rel=1e-12)
    assert loss(scaled, t).item() == pytest.approx(reference.info_nce(x, t, math.e), rel=1e-12)


def test_paper_preset_and_clip_init():
    loss = ALIGN_LOSSES.build(dict(type="InfoNCELoss"))
    # SEA's "τ = 0" read as ln s = 0: τ₀ = 1
    assert loss.logit_scale_value == 0.0 and loss.temperature == 1.0
    assert loss.max_logit_scale == pytest.approx(math.log(100))
    clip = ALIGN_LOSSES.build(dict(type="InfoNCELoss", init_logit_scale=math.log(1 / 0.07)))
    assert clip.temperature == pytest.approx(0.07, rel=1e-6)
    assert "tau=" in repr(clip) and "learnable=True" in repr(clip)


def test_learnable_temperature_gets_a_gradient():
    loss = ALIGN_LOSSES.build(dict(type="InfoNCELoss"))
    assert [name for name, _ in loss.named_parameters()] == ["logit_scale"]
    x, t = pair(8, 6, 4, torch.float32)
    loss(x, t).backward()
    assert loss.logit_scale.grad is not None
    assert torch.isfinite(loss.logit_scale.grad) and loss.logit_scale.grad.abs() > 0


def test_learnable_temperature_gradient_matches_finite_difference():
    loss = ALIGN_LOSSES.build(dict(type="InfoNCELoss", init_logit_scale=0.7)).double()
    x, t = pair(9, 5, 5)
    loss(x, t).backward()
    h = 1e-6
    ls = loss.logit_scale.item()  # 0.7 as stored in fp32
    fd = (reference.info_nce(x, t, math.exp(ls + h)) - reference.info_nce(x, t, math.exp(ls - h))) / (2 * h)
    assert loss.logit_scale.grad.item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_frozen_temperature_is_a_buffer_without_gradient():
    loss = ALIGN_LOSSES.build(dict(type="InfoNCELoss", init_logit_scale=0.5, learnable=False))
    assert list(loss.parameters()) == []
    assert "logit_scale" in dict(loss.named_buffers())
    assert "logit_scale" in loss.state_dict()  # still saved with the artifact
    x, t = pair(5, 4, 6, torch.float32)
    x.requires_grad_(True)
    loss(x, t).backward()
    assert loss.logit_scale.grad is None and not loss.logit_scale.requires_grad
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert loss.temperature == pytest.approx(math.exp(-0.5))


def test_scale_above_the_cap_behaves_like_the_cap():
    x, t = pair(7, 5, 7)
    capped = ALIGN_LOSSES.build(dict(type="InfoNCELoss", init_logit_scale=math.log(100))).double()
    above = ALIGN_LOSSES.build(dict(type="InfoNCELoss")).double()
    with torch.no_grad():
        above.logit_scale.fill_(9.0)  # s = e^9 ≈ 8103 if it were not clamped
    assert above(x, t).item() == pytest.approx(capped(x, t).item(), rel=1e-14)
    assert above(x, t).item() == pytest.approx(reference.info_nce(x, t, 100.0), rel=1e-12)
    assert above.temperature == pytest.approx(0.01)
    assert above.logit_scale_value == pytest.approx(math.log(100))
    above(x, t).backward()
    assert above.logit_scale.grad.item() == 0.0  # the clamp passes no gradient above the cap
    uncapped = ALIGN_LOSSES.build(
        dict(type="InfoNCELoss", init_logit_scale=9.0, max_logit_scale=None)
    ).double()  # 9.0 exact in fp32
    assert uncapped(x, t).item() == pytest.approx(reference.info_nce(x, t, math.exp(9.0)), rel=1e-12)


@pytest.mark.parametrize(
    "kwargs,word",
    [
        (dict(init_logit_scale=float("nan")), "init_logit_scale"),
        (dict(init_logit_scale="warm"), "init_logit_scale"),
        (dict(max_logit_scale=float("inf")), "max_logit_scale"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(chunk_size=-4), "chunk_size"),
        (dict(chunk_size=2.5), "chunk_size"),
        (dict(chunk_size="big"), "chunk_size"),
        (dict(chunk_size=True), "chunk_size"),
        (dict(learnable="yes"), "learnable"),
        (dict(eps=0.0), "eps"),
    ],
)
def test_bad_config_raises_naming_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ALIGN_LOSSES.build(dict(type="InfoNCELoss", **kwargs))
