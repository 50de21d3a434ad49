"""``tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--cfg-options K=V ...] [--launcher ...]``.

Thin on purpose: the config holds the knobs. ``main`` reads the config, applies
the command line, applies the mmengine compatibility fixes
(``alignkit.engine.compat``) and trains with mmengine's ``Runner`` — or with
``FlexibleRunner`` when the config sets a ``strategy`` (DeepSpeed ZeRO-2/3) or
``runner_type``.

- ``--work-dir``: command line, else the config's ``work_dir``, else
  ``./work_dirs/<config stem>``.
- ``--resume`` alone: resume from the latest checkpoint in the work dir; when
  there is none yet, start as the config says (its ``load_from``, if any, is
  still loaded). ``--resume PATH``: resume from that checkpoint.
- every run gets the hooks in ``REQUIRED_HOOKS``, listed in its config or not:
  ``ModelDescriptionHook`` (its checkpoints carry the model config as JSON
  data, which the tools rebuild the model from) and ``LabelCacheCheckHook`` (a
  dataset's label cache must match the model before the first step).
- ``--launcher none|pytorch|slurm``: ``pytorch`` under ``torch.distributed.run``
  (on CPUs too, with gloo), ``slurm`` under ``srun``.
- ``--vis tensorboard [wandb]``: log scalars to TensorBoard / Weights & Biases as
  well as to ``<work_dir>/<time>/vis_data/scalars.json`` (always kept: it is what
  ``tools/analyze_logs.py`` plots). Needs ``pip install alignkit[tensorboard]`` / ``[wandb]``.
- ``--no-validate``: no validation loop, whatever the config says.
- ``--amp``: mixed precision through mmengine's ``AmpOptimWrapper`` (on a CPU the
  compatibility layer falls back to ``OptimWrapper``; the model's own autocast still runs).
- ``--auto-scale-lr``: keep the preset when the real global batch differs from the
  one the schedule was written for (``auto_scale_lr.base_batch_size``, 256 for stage 1,
  128 for stage 2). With r = real / base, where real = world size × per-device
  batch × gradient-accumulation steps: every learning rate × r (the linear scaling
  rule, as mmengine's ``auto_scale_lr``), and an iteration-based schedule's
  ``max_iters`` and its schedulers' ``begin``/``end`` ÷ r (rounded up), so the run
  still sees the same number of samples (LLaVA's one epoch) with the same warmup share.

``main`` returns the Runner after training and can be called many times in one
process (tests do): each call gets an experiment name of its own, since
mmengine keys its logger, message hub and visualizer by that name.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmengine.runner.checkpoint import find_latest_checkpoint

from alignkit.cli import console, plain
import alignkit.registry  # noqa: F401  (puts the 'alignkit' scope in mmengine's registry tree)
from alignkit.engine.compat import apply_compat
from alignkit.engine.hooks import require_hooks
from alignkit.project_configs import find_config

LAUNCHERS = ("none", "pytorch", "slurm")
VIS_BACKENDS = {"tensorboard": "TensorboardVisBackend", "wandb": "WandbVisBackend"}
# Hooks every run gets: trust checks must not depend on a line of the config.
REQUIRED_HOOKS = ("ModelDescriptionHook", "LabelCacheCheckHook")
_calls = itertools.count()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a config file, or a packaged config such as sea/vicuna7b.py")
    parser.add_argument("--work-dir", help="where checkpoints and logs go (default: ./work_dirs/<config stem>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="PATH",
        help="resume from PATH, or (no PATH) from the latest checkpoint in the work dir",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        metavar="KEY=VALUE",
        help="override config entries, e.g. model.aligner.loss.type=SigmoidLoss train_cfg.max_iters=100",
    )
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none", help="job launcher (default: none)")
    parser.add_argument("--vis", nargs="+", choices=tuple(VIS_BACKENDS), default=[], metavar="BACKEND",
                        help="also log to tensorboard and/or wandb (scalars.json is always written)")
    parser.add_argument("--no-validate", action="store_true", help="do not run the validation loop")
    parser.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale lr and the iteration schedule to the real global batch (see the module docs)")
    # torch.distributed.launch (deprecated) passes --local-rank; torch.distributed.run sets LOCAL_RANK.
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.launcher != "none":  # only a launched rank has one; never leak it into an in-process caller
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    """The config file with the command line applied (no compatibility fixes yet)."""
    cfg = Config.fromfile(find_config(args.config))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.setdefault("default_scope", "alignkit")
    cfg.launcher = args.launcher
    require_hooks(cfg, REQUIRED_HOOKS)

    stem = Path(args.config).stem
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(Path("work_dirs") / stem)

    if args.resume == "auto":
        latest = find_latest_checkpoint(cfg.work_dir)
        if latest is None:
            print_log(f"--resume: no checkpoint in {cfg.work_dir} yet, starting from the start", logger="current")
        else:
            cfg.resume, cfg.load_from = True, latest
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    # mmengine appends the start time (seconds) to the name; the counter keeps two
    # calls within one second of each other, in one process, apart.
    if args.vis:
        backends = [dict(type="LocalVisBackend")] + [dict(type=VIS_BACKENDS[b]) for b in args.vis]
        cfg.visualizer = dict(type="Visualizer", vis_backends=backends)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        if cfg.get("strategy") is not None:
            raise ValueError("--amp: this config trains with a strategy (DeepSpeed); set its bf16/fp16 there instead")
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("dtype", "bfloat16")
    if args.auto_scale_lr:
        scale_schedule(cfg, world_size())

    call = next(_calls)
    name = cfg.get("experiment_name") or stem
    cfg.experiment_name = name if call == 0 else f"{name}-{call}"
    cfg.setdefault("env_cfg", dict(dist_cfg=dict(backend="nccl")))
    return cfg


def world_size() -> int:
    """The number of processes the launcher starts (torchrun's WORLD_SIZE, srun's SLURM_NTASKS, else 1)."""
    return int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)


def global_batch(cfg: Config, world: int) -> int:
    """world × per-device batch × gradient-accumulation steps (``optim_wrapper`` or DeepSpeed's)."""
    per_device = int(cfg.train_dataloader.batch_size)
    accumulate = (cfg.get("optim_wrapper") or {}).get("accumulative_counts")
    if accumulate is None:
        accumulate = (cfg.get("strategy") or {}).get("gradient_accumulation_steps", 1)
    return world * per_device * int(accumulate or 1)


def scale_schedule(cfg: Config, world: int) -> float:
    """``--auto-scale-lr`` (module docstring): lr × r, iterations ÷ r; returns r."""
    base = (cfg.get("auto_scale_lr") or {}).get("base_batch_size")
    if not base:
        raise ValueError("--auto-scale-lr needs auto_scale_lr = dict(base_batch_size=N) in the config: the global "
                         "batch its schedule was written for")
    real = global_batch(cfg, world)
    r = real / float(base)
    cfg.auto_scale_lr = dict(cfg.auto_scale_lr, enable=False)  # done here; mmengine must not scale again
    optimizer = cfg.optim_wrapper.optimizer
    optimizer.lr = optimizer.lr * r
    notes = [f"lr {optimizer.lr:g}"]
    if (cfg.get("train_cfg") or {}).get("type") == "IterBasedTrainLoop" and r != 1:
        cfg.train_cfg.max_iters = math.ceil(cfg.train_cfg.max_iters / r)
        notes.append(f"max_iters {cfg.train_cfg.max_iters}")
        schedulers = cfg.get("param_scheduler") or []
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            if not sched.get("by_epoch", True):
                for key in ("begin", "end"):
                    if isinstance(sched.get(key), int):
                        sched[key] = math.ceil(sched[key] / r)
    print_log(f"--auto-scale-lr: global batch {real} (world {world}) vs base {base:g}: r = {r:g}; "
              + ", ".join(notes), logger="current")
    return r


def build_runner(cfg: Config):
    """``Runner``, or ``FlexibleRunner`` when the config sets ``strategy``, or the config's ``runner_type``."""
    if "runner_type" in cfg:
        from mmengine.registry import RUNNERS

        return RUNNERS.build(cfg)
    if cfg.get("strategy") is not None:
        from mmengine.runner import FlexibleRunner

        return FlexibleRunner.from_cfg(cfg)
    return Runner.from_cfg(cfg)


def _close_log_files(runner) -> None:
    # mmengine never closes its log file; a long-lived process (tests) would keep one open per run.
    logger = getattr(runner, "logger", None)
    for handler in list(getattr(logger, "handlers", [])):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)


def main(argv: Sequence[str] | None = None):
    """Train as the command line says; return the Runner."""
    args = parse_args(argv)
    cfg = apply_compat(build_config(args))
    runner = build_runner(cfg)
    try:
        runner.train()
    finally:
        _close_log_files(runner)
    return runner


cli = console(main)  # the console script alignkit-train

if __name__ == "__main__":
    main()
