"""Distributed: two CPU processes (gloo) train through ``tools/train.py --launcher pytorch`` and end with identical weights.

The ranks read different shards (InfiniteSampler splits the index stream by
rank), so identical weights mean DDP really averaged the gradients; both
ranks' weights must also be what rank 0 saved in the final checkpoint.
"""
import os
import socket
import subprocess
import sys

import pytest
import torch
from engine_toy import ENGINE_TESTS, write_config

from alignkit.engine import load_checkpoint_file

REPO = ENGINE_TESTS.parents[1]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("options", [[], ["--cfg-options", "strategy.type=DDPStrategy"]], ids=["Runner", "FlexibleRunner"])
def test_two_gloo_ranks_end_with_identical_weights(tmp_path, options):
    config = write_config(tmp_path / "toy.py", max_iters=6, ckpt_interval=6)
    work_dir = tmp_path / "work"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ENGINE_TESTS), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",  # the CPU path is the one under test, whatever the machine has
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(REPO / "tools" / "train.py"), str(config), "--work-dir", str(work_dir), "--launcher", "pytorch", *options,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rank0 = torch.load(work_dir / "weights_rank0.pt", weights_only=True)
    rank1 = torch.load(work_dir / "weights_rank1.pt", weights_only=True)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["wrapper"] == rank1["wrapper"] == "MMDistributedDataParallel"
    assert not torch.equal(rank0["first_inputs"], rank1["first_inputs"]), "both ranks read the same batch"
    saved = load_checkpoint_file(str(work_dir / "iter_6.pth"), map_location="cpu")
    assert saved["meta"]["iter"] == 6
    # FlexibleRunner's DDPStrategy saves the wrapper's keys ('module.' prefix); mmengine strips it on load.
    saved_weights = {key.removeprefix("module."): value for key, value in saved["state_dict"].items()}
    assert saved_weights.keys() == rank0["state_dict"].keys()
    for key, value in rank0["state_dict"].items():
        assert torch.equal(value, rank1["state_dict"][key]), key
        assert torch.equal(value, saved_weights[key]), key
