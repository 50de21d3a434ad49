"""End-to-end: ``alignkit.cli.train.main([...])`` in-process on the toy config, and what its command line means."""
import importlib.util
import sys

import pytest
import torch
from engine_toy import iters_run, weights, write_config
from mmengine.device import get_device
from mmengine.optim import OptimWrapper
from mmengine.runner import FlexibleRunner

from alignkit.adapters import LinearAdapter, MLPAdapter
from alignkit.cli.train import main
from alignkit.engine import load_checkpoint_file

on_cpu = pytest.mark.skipif(get_device() != "cpu", reason="checks the CPU-only path")


def _loss_history(runner):
    values, _counts = runner.message_hub.get_scalar("train/loss_mse").data
    return values


def test_main_trains_saves_and_defaults_work_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "toy.py", max_iters=10, ckpt_interval=5)
    runner = main(["toy.py"])

    work_dir = tmp_path / "work_dirs" / "toy"  # ./work_dirs/<config stem>
    assert (work_dir / "last_checkpoint").read_text().strip() == str(work_dir / "iter_10.pth")
    assert (work_dir / "iter_5.pth").is_file() and (work_dir / "toy.py").is_file()
    assert runner.default_scope.scope_name == "alignkit"
    assert isinstance(runner.model.adapter, MLPAdapter)
    saved = load_checkpoint_file(str(work_dir / "iter_10.pth"), map_location="cpu")
    for key, value in weights(runner).items():
        assert torch.equal(saved["state_dict"][key], value), key
    losses = _loss_history(runner)
    assert len(losses) == 10 and losses[-3:].mean() < losses[:3].mean()


def test_two_calls_in_one_process_keep_their_state_apart(tmp_path):
    config = write_config(tmp_path / "toy.py", max_iters=4, ckpt_interval=4)
    first = main([str(config), "--work-dir", str(tmp_path / "a")])
    second = main([str(config), "--work-dir", str(tmp_path / "b"), "--cfg-options", "train_cfg.max_iters=2"])
    # mmengine keys its message hub, logger and visualizer by experiment name;
    # a shared name would have merged the two loss histories (4 + 2 entries).
    assert first.experiment_name != second.experiment_name
    assert (len(_loss_history(first)), len(_loss_history(second))) == (4, 2)
    assert (iters_run(first), iters_run(second)) == (4, 2)


def test_cfg_options_reach_the_registry_under_the_alignkit_scope(tmp_path):
    config = write_config(tmp_path / "toy.py", max_iters=2, ckpt_interval=2)
    runner = main([str(config), "--work-dir", str(tmp_path / "w"), "--cfg-options", "model.adapter.type=LinearAdapter"])
    assert isinstance(runner.model.adapter, LinearAdapter)


def test_auto_resume_without_a_checkpoint_still_loads_load_from(tmp_path):
    # Stage 2 sets load_from to the stage-1 weights; `--resume` on a fresh work dir
    # must start from them, not from scratch.
    config = write_config(tmp_path / "toy.py", max_iters=4, ckpt_interval=4)
    trained = weights(main([str(config), "--work-dir", str(tmp_path / "stage1")]))
    runner = main(
        [str(config), "--work-dir", str(tmp_path / "stage2"), "--resume", "--cfg-options",
         f"load_from={tmp_path / 'stage1' / 'iter_4.pth'}", "train_cfg.max_iters=0"]
    )  # fmt: skip
    for key, value in weights(runner).items():
        assert torch.equal(value, trained[key]), key


def test_a_strategy_selects_flexible_runner(tmp_path):
    config = write_config(tmp_path / "toy.py", max_iters=3, ckpt_interval=3)
    runner = main([str(config), "--work-dir", str(tmp_path / "w"), "--cfg-options", "strategy.type=SingleDeviceStrategy"])
    assert isinstance(runner, FlexibleRunner)
    assert iters_run(runner) == 3 and (tmp_path / "w" / "iter_3.pth").is_file()


@on_cpu
def test_amp_optim_wrapper_falls_back_on_cpu(tmp_path):
    config = write_config(tmp_path / "toy.py", max_iters=2, ckpt_interval=2)
    options = ["optim_wrapper.type=AmpOptimWrapper", "optim_wrapper.dtype=bfloat16"]
    runner = main([str(config), "--work-dir", str(tmp_path / "w"), "--cfg-options", *options])
    assert type(runner.optim_wrapper) is OptimWrapper and iters_run(runner) == 2


def test_deepspeed_strategy_without_deepspeed_says_how_to_install(tmp_path, monkeypatch):
    # The dev extra installs deepspeed; hide it as an environment without it would look
    # (a None entry in sys.modules makes find_spec say None and `import deepspeed` fail).
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    assert importlib.util.find_spec("deepspeed") is None
    config = write_config(tmp_path / "toy.py", max_iters=2, ckpt_interval=2)
    with pytest.raises(ImportError, match=r"alignkit\[deepspeed\]"):
        main([str(config), "--work-dir", str(tmp_path / "w"), "--cfg-options", "strategy.type=DeepSpeedStrategy"])
    assert not (tmp_path / "w").exists()  # failed before building anything
