"""``SkippedSamplesHook``: put the data layer's skipped-sample counts in the training log.

``LLaVADataset`` replaces every sample it cannot train on (missing or
unreadable image, too long, labels that do not line up with the tokens, ...)
and ``llava_collate`` reports the replaced ones per batch in
``data_samples['skipped']`` (``{reason: count}``) and the cut ones in
``data_samples['num_truncated']``. This hook adds them up over the run, so a
bad sample is never dropped without a trace:

- a warning line naming each reason and its running count, whenever new skips
  appeared since the last one (at most once per logging interval);
- scalars ``train/data_skipped_<reason>`` and ``train/data_truncated`` (running
  totals) in the message hub, so they show in the log line and ``scalars.json``
  (no key contains ``loss``: the Runner would add it to the loss);
- a summary when training ends ("skipped N samples: too_long 3, ...");
- the totals travel in each checkpoint and are put back on resume.

Several processes: each rank counts its own batches and the counts are summed
over ranks (one ``all_reduce`` of a small integer tensor of the known reasons;
``error:<ExceptionType>`` reasons, which only exist once they happen, are
added with one ``all_gather_object`` when the reduced tensor says some rank
has any) only at the synchronisation points, which every rank reaches at the same iteration: the
logger's interval, the checkpoint interval, the end of an epoch and the last
iteration. The totals, the log and the checkpoint are therefore global.
"""
from __future__ import annotations

import logging
from collections import Counter

import torch
from mmengine.dist import all_gather_object, all_reduce, is_main_process
from mmengine.hooks import CheckpointHook, Hook, LoggerHook
from mmengine.logging import print_log

from alignkit.datasets.constants import ERROR_PREFIX, SKIP_REASONS, is_skip_reason
from alignkit.registry import HOOKS
from alignkit.utils.validate import check_int

_KEY = "data_skip_counts"
TRUNCATED = "truncated"
# A fixed order, so that every rank's count vector means the same thing in all_reduce;
# the last slot counts the error:<ExceptionType> skips, whose names travel separately.
_SLOTS = (*SKIP_REASONS, TRUNCATED)
_DEFAULT_INTERVAL = 10


def _count(value, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return check_int(what, value, low=0)


def format_counts(totals: dict[str, int]) -> str:
    """``'skipped 4 samples: too_long 3, missing_image 1'`` (most frequent first), or ``'no samples skipped'``;
    ``'; truncated N samples'`` is appended when any were cut."""
    skipped = {r: n for r, n in totals.items() if r != TRUNCATED and n}
    text = "no samples skipped"
    if skipped:
        parts = ", ".join(f"{r} {n}" for r, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        text = f"skipped {sum(skipped.values())} samples: {parts}"
    if totals.get(TRUNCATED):
        text += f"; truncated {totals[TRUNCATED]} samples"
    return text


@HOOKS.register_module()
class SkippedSamplesHook(Hook):
    """Count the samples the data layer skipped (per reason) and report them (module docstring).

    Add it with ``custom_hooks = [dict(type='SkippedSamplesHook')]``.

    Args:
        interval: iterations between two synchronisations (and at most one
            warning per interval); by default the ``LoggerHook``'s interval.
    """

    # Before LoggerHook (BELOW_NORMAL) in after_train_iter, so the log line shows this iteration's totals.
    priority = "NORMAL"

    def __init__(self, interval: int | None = None) -> None:
        self.interval = None if interval is None else check_int("interval (None: the logger's)", interval, low=1)
        self._checkpoint_interval: int | None = None
        self._totals: Counter = Counter()  # summed over ranks, up to the last synchronisation
        self._pending: Counter = Counter()  # this rank's counts since the last synchronisation
        self._loaded: dict | None = None
        self._warned_no_counts = False

    @property
    def totals(self) -> dict[str, int]:
        """``{reason: count}`` over the whole run (all ranks), up to the last synchronisation; ``'truncated'``
        counts samples cut to ``max_length``."""
        errors = sorted(k for k in self._totals if k.startswith(ERROR_PREFIX))
        return {k: self._totals[k] for k in (*_SLOTS, *errors) if self._totals[k]}

    # --- counting ----------------------------------------------------------------
    def add_batch(self, data_batch) -> None:
        """Add one batch's ``data_samples['skipped']`` and ``['num_truncated']`` to this rank's pending counts."""
        samples = data_batch.get("data_samples") if isinstance(data_batch, dict) else None
        if not isinstance(samples, dict) or "skipped" not in samples:
            if not self._warned_no_counts:
                self._warned_no_counts = True
                print_log(
                    "SkippedSamplesHook: the batches carry no data_samples['skipped'] (not llava_collate?); "
                    "nothing to count",
                    logger="current",
                    level=logging.WARNING,
                )
            return
        skipped = samples["skipped"]
        if not isinstance(skipped, dict):
            raise ValueError(f"data_samples['skipped'] must be a dict reason -> count, got {skipped!r}")  # noqa: TRY004
        for reason, n in skipped.items():
            if not is_skip_reason(reason):
                raise ValueError(f"data_samples['skipped'] has unknown reason {reason!r}; expected one of "
                                 f"{sorted(SKIP_REASONS)} or {ERROR_PREFIX}<ExceptionType>")
            self._pending[reason] += _count(n, f"data_samples['skipped'][{reason!r}]")
        self._pending[TRUNCATED] += _count(samples.get("num_truncated", 0), "data_samples['num_truncated']")

    def _sync(self, runner) -> None:
        """Sum every rank's pending counts into the totals; warn and update the scalars if any are new."""
        errors = {k: n for k, n in self._pending.items() if k.startswith(ERROR_PREFIX) and n}
        pending = torch.tensor([self._pending[k] for k in _SLOTS] + [sum(errors.values())], dtype=torch.long)
        all_reduce(pending, op="sum")  # (R + 2,); a no-op in a single process
        self._pending.clear()
        *known, n_errors = pending.tolist()
        new = {k: int(n) for k, n in zip(_SLOTS, known, strict=True) if n}
        if n_errors:  # every rank sees the same reduced count, so every rank joins the gather
            for rank_errors in all_gather_object(errors):
                for k, n in rank_errors.items():
                    new[k] = new.get(k, 0) + int(n)
        if not new:
            return
        self._totals.update(new)
        self._publish(runner)
        if is_main_process():
            print_log(
                f"SkippedSamplesHook: iter {runner.iter + 1}: {format_counts(self.totals)} so far "
                f"(new: {', '.join(f'{k} {n}' for k, n in new.items())})",
                logger="current",
                level=logging.WARNING,
            )

    def _publish(self, runner) -> None:
        for key, n in self.totals.items():
            name = "data_truncated" if key == TRUNCATED else f"data_skipped_{key}"
            runner.message_hub.update_scalar(f"train/{name}", n)

    # --- hook points -------------------------------------------------------------
    def before_train(self, runner) -> None:
        for hook in getattr(runner, "hooks", ()):
            if isinstance(hook, LoggerHook) and self.interval is None:
                self.interval = hook.interval
            if isinstance(hook, CheckpointHook) and not hook.by_epoch and hook.interval > 0:
                self._checkpoint_interval = hook.interval
        if self.interval is None:
            self.interval = _DEFAULT_INTERVAL
        # Only a resumed run continues the counts: a checkpoint loaded with load_from
        # (runner.iter still 0) belongs to another run.
        loaded, self._loaded = self._loaded, None
        if loaded is not None and runner.iter > 0:
            self._totals = Counter({k: int(n) for k, n in loaded.items() if k in _SLOTS or is_skip_reason(k)})
            self._publish(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.add_batch(data_batch)
        # Every rank evaluates the same condition at the same iteration, so the all_reduce matches up.
        if (
            self.every_n_inner_iters(batch_idx, self.interval or _DEFAULT_INTERVAL)
            or (self._checkpoint_interval and self.every_n_train_iters(runner, self._checkpoint_interval))
            or self.end_of_epoch(runner.train_dataloader, batch_idx)
            or self.is_last_train_iter(runner)
        ):
            self._sync(runner)

    def after_train(self, runner) -> None:
        self._sync(runner)  # counts of an interrupted last interval, if any
        if is_main_process():
            level = logging.WARNING if any(k != TRUNCATED for k in self.totals) else logging.INFO
            print_log(f"SkippedSamplesHook: training done, {format_counts(self.totals)}", logger="current",
                      level=level)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Synchronised at the checkpoint interval and the last iteration just before CheckpointHook
        # (VERY_LOW) saves; this rank's own pending counts are added for a save at any other moment.
        errors = sorted(k for k in {*self._totals, *self._pending} if k.startswith(ERROR_PREFIX))
        checkpoint[_KEY] = {k: self._totals[k] + self._pending[k] for k in (*_SLOTS, *errors)
                            if self._totals[k] + self._pending[k]}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Kept until before_train: only then is it known whether this is a resume.
        self._loaded = checkpoint.get(_KEY)
