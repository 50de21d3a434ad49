"""``NonFinitePatchesHook``: say in the training log when patches had NaN/inf dense embeddings.

``SEAAligner`` gives such a patch no label (a NaN similarity ranks nothing) and
counts it in its output ``align_patches_nonfinite``. A count in the log line is
easy to miss, and a batch whose patches are all non-finite trains with
``loss_align = 0``: so this hook adds the counts up over ranks (one
``all_reduce`` of a small tensor at each logging interval, which every rank
reaches at the same iteration) and writes a warning, at most once per
interval, when any appeared, with the running total (also the scalar
``train/align_patches_nonfinite_total``) and a summary when training ends.
"""
from __future__ import annotations

import logging

import torch
from mmengine.dist import all_reduce, is_main_process
from mmengine.hooks import Hook, LoggerHook
from mmengine.logging import print_log

from alignkit.registry import HOOKS
from alignkit.utils.validate import check_int

KEY = "align_patches_nonfinite"
_DEFAULT_INTERVAL = 10


@HOOKS.register_module()
class NonFinitePatchesHook(Hook):
    """Warn, once per interval and summed over ranks, about patches with non-finite dense embeddings.

    Args:
        interval: iterations between two checks (and at most one warning per
            interval); by default the ``LoggerHook``'s interval.
    """

    priority = "NORMAL"  # before LoggerHook (BELOW_NORMAL): the log line shows this iteration's total

    def __init__(self, interval: int | None = None) -> None:
        self.interval = None if interval is None else check_int("interval (None: the logger's)", interval, low=1)
        self.total = 0  # all ranks, up to the last check
        self._pending = 0.0  # this rank, since the last check
        self._iters_with = 0

    def before_train(self, runner) -> None:
        if self.interval is None:
            loggers = [h for h in getattr(runner, "hooks", ()) if isinstance(h, LoggerHook)]
            self.interval = loggers[0].interval if loggers else _DEFAULT_INTERVAL

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        value = outputs.get(KEY) if isinstance(outputs, dict) else None
        if value is not None:
            count = float(value)
            self._pending += count
            self._iters_with += count > 0
        # The same condition on every rank at the same iteration, so the all_reduce matches up.
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            self._check(runner)

    def _check(self, runner) -> None:
        counts = torch.tensor([self._pending, float(self._iters_with)], dtype=torch.float64)
        all_reduce(counts, op="sum")  # a no-op in a single process
        self._pending, self._iters_with = 0.0, 0
        new, iters = round(counts[0].item()), round(counts[1].item())
        if not new:
            return
        self.total += new
        runner.message_hub.update_scalar(f"train/{KEY}_total", self.total)
        if is_main_process():
            print_log(
                f"NonFinitePatchesHook: iter {runner.iter + 1}: {new} patches had NaN/inf dense embeddings in "
                f"the last {self.interval} iterations ({iters} rank-iterations; {self.total} so far). They get no "
                "label; a batch with no finite patch trains with loss_align = 0. Check the vision tower's "
                "weights and precision",
                logger="current",
                level=logging.WARNING,
            )

    def after_train(self, runner) -> None:
        if self.total and is_main_process():
            print_log(f"NonFinitePatchesHook: training done, {self.total} patches had NaN/inf dense embeddings",
                      logger="current", level=logging.WARNING)
