"""``RNGStateHook``: carry the random-number generators' state through a checkpoint.

mmengine's resume re-seeds every generator from the run's seed, so after a
resume the training step draws different random numbers (dropout masks, the
SEA samplers' draws) than an uninterrupted run would have drawn. This hook
stores the torch (CPU and current accelerator), numpy and Python generators in
the checkpoint and puts them back when training starts again, so a resumed run
continues the same random stream.

The state is taken when the checkpoint is written, so it is exact when nothing
between that moment and the next training step draws from the main process's
generators. Validation does draw (creating a DataLoader iterator takes a seed
from the global torch generator; a metric or model may draw more), and it runs
right after a checkpoint: so the hook runs the validation loop on a fork of
every generator (torch CPU and accelerator, numpy, Python), put back when the
loop ends. Training then draws the same numbers whether or not, and however
often, it validates, and a resumed run continues the uninterrupted run's
stream bitwise. On resume, mmengine's iteration-based loop replays the batches
it already trained on; with ``num_workers=0`` their random transforms draw from
the training process's generators, so the state is put back after that replay,
just before the first new batch. With ``num_workers > 0`` data transforms draw
in the workers, whose seeds mmengine already derives from the run's seed.

Several processes: only the process that writes the checkpoint (rank 0) is
saved. With ``randomness.diff_rank_seed=False`` (the default) every rank seeds
alike, and its state is put back on every rank; with ``diff_rank_seed=True``
only rank 0 gets its state back and the other ranks start again from their
seeds (logged), since giving them rank 0's stream would make the ranks draw alike.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log

from alignkit.registry import HOOKS

_KEY = "rng_state"


def _get_state() -> dict:
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = dict(
        torch=torch.get_rng_state(),
        # numpy's key array as a tensor: a weights_only load accepts tensors, not ndarrays.
        numpy=(kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian),
        python=random.getstate(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_state(state: dict) -> None:
    # A resume maps the checkpoint to the training device; generator states live on the CPU.
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


@contextlib.contextmanager
def forked_rng():
    """Run the block on the generators' current state, then put that state back (torch, accelerator, numpy, Python)."""
    state = _get_state()
    try:
        yield
    finally:
        _set_state(state)


def _fork_loop(loop) -> None:
    """Make ``loop.run`` run under :func:`forked_rng` (once; the loop object is the Runner's)."""
    if loop is None or getattr(loop.run, "_alignkit_forked_rng", False):
        return
    run = loop.run

    @functools.wraps(run)
    def run_forked(*args, **kwargs):
        with forked_rng():
            return run(*args, **kwargs)

    run_forked._alignkit_forked_rng = True
    loop.run = run_forked


class _RestoreAfterReplay:
    """A train loop's data iterator that puts the generators' state back after the first ``replay`` batches.

    mmengine resumes an iteration-based run by drawing the ``replay`` batches it
    already trained on again; with ``num_workers=0`` their random transforms (and
    the dataset's random replacement of a bad sample) draw from the training
    process's generators. The checkpoint's state belongs after those draws, just
    before the next new batch, so that is where it is restored.
    """

    def __init__(self, iterator, replay: int, state: dict) -> None:
        self._iterator, self._replay, self._state = iterator, replay, state

    def __next__(self):
        if self._replay == 0 and self._state is not None:
            _set_state(self._state)
            self._state = None
        self._replay -= 1
        return next(self._iterator)

    def __iter__(self):
        return self

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the generators' state in each checkpoint, restore it when a resumed run starts, fork it for validation.

    Add it to a config with ``custom_hooks = [dict(type='RNGStateHook')]``.
    Checkpoints without the state (older ones) resume as mmengine does, from the seed.
    """

    # Restore after every other hook's before_train, so that the stream picks
    # up exactly where the interrupted run's next iteration would have.
    priority = "LOWEST"

    def __init__(self) -> None:
        self._loaded: dict | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[_KEY] = _get_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Keep it until training starts: mmengine's resume may re-seed after loading.
        self._loaded = checkpoint.get(_KEY)

    def before_train(self, runner) -> None:
        # Runner.train builds its validation loop before the hooks run: validation never moves the training stream.
        _fork_loop(runner.val_loop)
        state, self._loaded = self._loaded, None
        if state is None:
            return
        diff_rank_seed = (runner.cfg.get("randomness") or {}).get("diff_rank_seed", False)
        if runner.rank != 0 and diff_rank_seed:
            print_log(
                f"RNGStateHook: rank {runner.rank} restarts its random stream from its seed "
                "(the checkpoint holds rank 0's state and diff_rank_seed=True)",
                logger="current",
                level=logging.WARNING,
            )
            return
        loop = runner.train_loop
        if runner.iter > 0 and getattr(loop, "dataloader_iterator", None) is not None:
            # IterBasedTrainLoop replays runner.iter batches after before_train: restore after them.
            loop.dataloader_iterator = _RestoreAfterReplay(loop.dataloader_iterator, runner.iter, state)
        else:
            _set_state(state)
