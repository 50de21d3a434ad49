"""``adapter.safetensors`` is byte-reproducible: the same weights give the same file, in any process.

safetensors writes its metadata through a hash map whose order is random per
process and per map, so before the header was sorted two identical runs gave
files with different bytes.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from alignkit.export.artifact import load_adapter, safetensors_bytes, save_adapter
from alignkit.registry import ADAPTERS, ALIGN_LOSSES


def test_same_adapter_same_bytes_every_time(tmp_path):
    torch.manual_seed(0)
    adapter = ADAPTERS.build(dict(type="MLPAdapter", vision_dim=6, llm_dim=5, act_kwargs=dict(approximate="tanh")))
    loss = ALIGN_LOSSES.build(dict(type="SigmoidLoss"))
    paths = [save_adapter(tmp_path / f"adapter{i}.safetensors", adapter, loss) for i in range(5)]
    assert len({Path(p).read_bytes() for p in paths}) == 1
    art = load_adapter(paths[0])  # still a valid safetensors file with all its metadata
    assert set(art.metadata) == {"format", "adapter_type", "adapter_config", "llava_projector_type", "temperature"}
    assert art.build_adapter().act_kwargs == {"approximate": "tanh"}
    # The check is sensitive: safetensors alone orders the same metadata differently from one save to the next.
    raw = {save(dict(w=torch.zeros(1)), metadata=art.metadata) for _ in range(5)}
    assert len(raw) > 1


def test_sorted_header_keeps_every_tensor_and_key(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(shape, generator=g).to(dtype) for name, shape, dtype in
               [("b", (3,), torch.float32), ("a", (2, 5), torch.bfloat16), ("c.d", (7,), torch.float16)]}
    metadata = {f"k{i}": f"value {i}" for i in range(9, -1, -1)}
    path = tmp_path / "t.safetensors"
    path.write_bytes(safetensors_bytes(tensors, metadata))
    n = int.from_bytes(path.read_bytes()[:8], "little")
    assert n % 8 == 0
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == metadata
        assert set(f.keys()) == set(tensors)
        for name, value in tensors.items():
            assert torch.equal(f.get_tensor(name), value)
