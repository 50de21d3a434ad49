"""Resume: a run interrupted after its checkpoint at iteration k and resumed ends bitwise equal to an uninterrupted one.

Everything is real: ``alignkit.cli.train.main`` in-process, mmengine's Runner,
its checkpoints loaded through the weights_only loader of
``alignkit.engine.compat`` (without it torch >= 2.6 refuses them), the
InfiniteSampler's data order, AdamW's state, the LR schedule, and dropout's
random stream (restored by ``RNGStateHook``).
"""
from pathlib import Path

import pytest
import torch
from engine_toy import SimulatedCrash, iters_run, weights, write_config

from alignkit.cli.train import main

MAX_ITERS, CKPT_EVERY, CRASH_AT = 10, 4, 6  # checkpoints at 4 and 8; the crash loses iterations 5-6


def _crash_config(tmp_path: Path, hooks: str) -> Path:
    path = tmp_path / "toy_crash.py"
    path.write_text(f"_base_ = ['./toy.py']\ncustom_hooks = [{hooks}, dict(type='alignkit_test.CrashAtIterHook', at={CRASH_AT})]\n")
    return path


def _interrupted_then_resumed(tmp_path: Path, resume_args, hooks: str, base: Path) -> dict:
    work_dir = tmp_path / "interrupted"
    with pytest.raises(SimulatedCrash):
        main([str(_crash_config(tmp_path, hooks)), "--work-dir", str(work_dir)])
    assert (work_dir / "last_checkpoint").read_text().strip().endswith(f"iter_{CKPT_EVERY}.pth")
    runner = main([str(base), "--work-dir", str(work_dir), *resume_args(work_dir)])
    # It did resume: a fresh start from the same seed would also match the uninterrupted run.
    assert (runner.iter, iters_run(runner)) == (MAX_ITERS, MAX_ITERS - CKPT_EVERY)
    return weights(runner)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("full")
    config = write_config(tmp_path / "toy.py", max_iters=MAX_ITERS, ckpt_interval=CKPT_EVERY)
    runner = main([str(config), "--work-dir", str(tmp_path / "work")])
    assert (runner.iter, iters_run(runner)) == (MAX_ITERS, MAX_ITERS)
    return weights(runner)


@pytest.mark.parametrize(
    "resume_args",
    [lambda work_dir: ["--resume"], lambda work_dir: ["--resume", str(work_dir / f"iter_{CKPT_EVERY}.pth")]],
    ids=["auto", "path"],
)
def test_resumed_run_equals_uninterrupted_bitwise(tmp_path, uninterrupted, resume_args):
    base = write_config(tmp_path / "toy.py", max_iters=MAX_ITERS, ckpt_interval=CKPT_EVERY)
    hooks = "dict(type='RNGStateHook'), dict(type='alignkit_test.CountItersHook')"
    resumed = _interrupted_then_resumed(tmp_path, resume_args, hooks, base)

    initial = weights(main([str(base), "--work-dir", str(tmp_path / "zero"), "--cfg-options", "train_cfg.max_iters=0"]))
    assert any(not torch.equal(initial[k], uninterrupted[k]) for k in initial), "training did not move the weights"
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        assert torch.equal(resumed[key], uninterrupted[key]), key


def test_without_rng_state_the_dropout_stream_diverges(tmp_path, uninterrupted):
    # The check above is sensitive to the random stream: mmengine alone re-seeds on
    # resume, so dropout draws other masks and the weights come out different.
    write_config(tmp_path / "toy.py", max_iters=MAX_ITERS, ckpt_interval=CKPT_EVERY)
    hooks = "dict(type='alignkit_test.CountItersHook')"
    base = tmp_path / "toy_no_rng.py"
    base.write_text(f"_base_ = ['./toy.py']\ncustom_hooks = [{hooks}]\n")
    resumed = _interrupted_then_resumed(tmp_path, lambda w: ["--resume"], hooks, base)
    assert any(not torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


@pytest.fixture(scope="module")
def uninterrupted_with_validation(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("full_val")
    config = write_config(tmp_path / "toy.py", max_iters=MAX_ITERS, ckpt_interval=CKPT_EVERY, val_interval=2)
    runner = main([str(config), "--work-dir", str(tmp_path / "work")])
    return weights(runner), runner.message_hub.get_scalar("val/toy_mse").current()


def test_resumed_run_equals_uninterrupted_bitwise_with_validation_on(tmp_path, uninterrupted_with_validation):
    # Validation every 2 iterations, so one runs right after each checkpoint: its DataLoader draws from
    # the global RNG, which must not move the training stream (RNGStateHook forks it around validation).
    full, full_val = uninterrupted_with_validation
    base = write_config(tmp_path / "toy.py", max_iters=MAX_ITERS, ckpt_interval=CKPT_EVERY, val_interval=2)
    hooks = "dict(type='RNGStateHook'), dict(type='alignkit_test.CountItersHook')"
    resumed = _interrupted_then_resumed(tmp_path, lambda work_dir: ["--resume"], hooks, base)
    assert resumed.keys() == full.keys()
    for key in full:
        assert torch.equal(resumed[key], full[key]), key


def test_validation_does_not_move_the_training_stream(uninterrupted, uninterrupted_with_validation):
    full, full_val = uninterrupted_with_validation
    assert full_val > 0  # validation did run
    assert all(torch.equal(full[k], uninterrupted[k]) for k in uninterrupted)


def test_resumed_run_equals_uninterrupted_bitwise_with_random_transforms_in_the_main_process(tmp_path):
    # num_workers=0: the dataset's random transform draws from the global RNG in the training process. mmengine
    # replays the first k batches on resume (drawing again), so the state must be put back after the replay.
    full_dir = tmp_path / "full"
    full_dir.mkdir()
    full_cfg = write_config(full_dir / "toy.py", max_iters=MAX_ITERS, ckpt_interval=CKPT_EVERY)
    option = ["--cfg-options", "train_dataloader.dataset.augment=0.5"]
    full = weights(main([str(full_cfg), "--work-dir", str(full_dir / "work"), *option]))
    base = write_config(tmp_path / "toy.py", max_iters=MAX_ITERS, ckpt_interval=CKPT_EVERY)
    hooks = "dict(type='RNGStateHook'), dict(type='alignkit_test.CountItersHook')"
    crash = _crash_config(tmp_path, hooks)
    with pytest.raises(SimulatedCrash):
        main([str(crash), "--work-dir", str(tmp_path / "cut"), *option])
    runner = main([str(base), "--work-dir", str(tmp_path / "cut"), "--resume", *option])
    assert iters_run(runner) == MAX_ITERS - CKPT_EVERY
    resumed = weights(runner)
    for key in full:
        assert torch.equal(resumed[key], full[key]), key
