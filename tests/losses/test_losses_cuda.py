"""The align losses on a CUDA device (skipped without one): same numbers as on CPU, fp32 under bf16 autocast."""

import pytest
import torch
from helpers import pair, value_and_grads

from alignkit.registry import ALIGN_LOSSES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
NAMES = ["InfoNCELoss", "SigmoidLoss"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_cuda_float64_matches_cpu_full_path(name, chunk_size):
    x, t = pair(50, 16, 0)
    cpu_value, cpu_grads = value_and_grads(ALIGN_LOSSES.build(dict(type=name)).double(), x, t)
    loss = ALIGN_LOSSES.build(dict(type=name, chunk_size=chunk_size)).double().cuda()
    value, grads = value_and_grads(loss, x.cuda(), t.cuda())
    torch.testing.assert_close(value, cpu_value, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads, cpu_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_cuda_bf16_autocast_gives_fp32(name, chunk_size):
    x, t = (v.float().cuda() for v in pair(40, 32, 1))
    loss = ALIGN_LOSSES.build(dict(type=name, chunk_size=chunk_size)).cuda()
    reference = loss(x, t)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        value = loss(x.to(torch.bfloat16), t.to(torch.bfloat16))
        exact = loss(x, t)
    assert value.dtype == torch.float32 and exact.dtype == torch.float32
    torch.testing.assert_close(exact, reference, rtol=1e-5, atol=1e-6)  # TF32 may differ from fp32 slightly
    assert abs(value.item() - reference.item()) <= 0.05 * max(1.0, abs(reference.item()))
    value.backward()
    assert all(torch.isfinite(p.grad).all() for p in loss.parameters())
