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

``main`` returns the Runner after training and can be called many times in one
process (tests do): each call gets an experiment name of its own, since
mmengine keys its logger, message hub and visualizer by that name.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmengine.runner.checkpoint import find_latest_checkpoint

import alignkit.registry  # noqa: F401  (puts the 'alignkit' scope in mmengine's registry tree)
from alignkit.engine.compat import apply_compat

LAUNCHERS = ("none", "pytorch", "slurm")
# Hooks every run gets: trust checks must not depend on a line of the config.
REQUIRED_HOOKS = ("ModelDescriptionHook", "LabelCacheCheckHook")
_calls = itertools.count()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/train.py", description="Train a model from an mmengine config.")
    parser.add_argument("config", help="path of the config file")
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
    # torch.distributed.launch (deprecated) passes --local-rank; torch.distributed.run sets LOCAL_RANK.
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    """The config file with the command line applied (no compatibility fixes yet)."""
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.setdefault("default_scope", "alignkit")
    cfg.launcher = args.launcher
    _require_hooks(cfg)

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
    call = next(_calls)
    name = cfg.get("experiment_name") or stem
    cfg.experiment_name = name if call == 0 else f"{name}-{call}"
    cfg.setdefault("env_cfg", dict(dist_cfg=dict(backend="nccl")))
    return cfg


def _require_hooks(cfg: Config) -> None:
    """Append each of ``REQUIRED_HOOKS`` the config does not list (as ``Name`` or ``scope.Name``)."""
    hooks = list(cfg.get("custom_hooks") or [])
    listed = {str(h.get("type", "")).rsplit(".", 1)[-1] for h in hooks if isinstance(h, dict)}
    cfg.custom_hooks = [*hooks, *(dict(type=name) for name in REQUIRED_HOOKS if name not in listed)]


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


if __name__ == "__main__":
    main()
