"""``tools/test.py CONFIG CHECKPOINT [--out metrics.json]``: a checkpoint's alignment metrics.

Runs mmengine's test loop on the config's test split (``test_dataloader`` +
``test_evaluator``), or, when the config has none, on its validation split
(``val_dataloader`` + ``val_evaluator``, e.g. ``AlignmentMetric``: label
retrieval top-1/top-5, mean rank, label cosine, nearest-word agreement, TACS;
docs/evaluation.md), with the checkpoint's weights, loaded strictly (a checkpoint of another
model is refused with the first differing key). CONFIG names the data, so it
is needed (a checkpoint carries its model, never its data); it may be the
config mmengine dumped in the work dir, or a packaged name (``sea/demo_tiny.py``).

Prints the metrics, writes them to ``--out`` (JSON) when asked and returns them.
Logs go to ``--work-dir`` (default ``./work_dirs/test_<config stem>``).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from mmengine.config import DictAction
from mmengine.runner import Runner

from alignkit.cli import console, plain
import alignkit.registry  # noqa: F401  (the 'alignkit' scope)
from alignkit.cli.common import load_weights, resolve
from alignkit.engine.compat import apply_compat
from alignkit.engine.hooks import require_hooks
from alignkit.project_configs import find_config


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="the config (a file, or a packaged name such as sea/demo_tiny.py)")
    p.add_argument("checkpoint", help="the checkpoint (iter_N.pth)")
    p.add_argument("--work-dir", help="where the test logs go (default: ./work_dirs/test_<config stem>)")
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE", help="override config entries")
    return p.parse_args(argv)


def test_config(cfg, checkpoint: str | None, work_dir: str | None):
    """``cfg`` set up for ``Runner.test()``: the checkpoint, the test split (else the validation split)."""
    test = cfg.get("test_dataloader"), cfg.get("test_evaluator")
    val = cfg.get("val_dataloader"), cfg.get("val_evaluator")
    if not all(test):
        if not all(val):
            raise ValueError(f"config {cfg.filename!r} has neither test_dataloader + test_evaluator nor "
                             "val_dataloader + val_evaluator: nothing to evaluate on")
        cfg.test_dataloader, cfg.test_evaluator = val
    cfg.test_cfg = cfg.get("test_cfg") or dict(type="TestLoop")
    cfg.load_from, cfg.resume = None, False  # loaded strictly by main, not by mmengine's lenient loader
    cfg.setdefault("default_scope", "alignkit")
    cfg.work_dir = work_dir or str(Path("work_dirs") / f"test_{Path(cfg.filename or 'config').stem}")
    cfg.launcher = "none"
    cfg.pop("strategy", None)  # evaluation runs on one process, without DeepSpeed
    cfg.pop("runner_type", None)
    return require_hooks(cfg, ("LabelCacheCheckHook",))  # a label cache must match the model it is scored with


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg, source = resolve(find_config(args.config), args.checkpoint)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg = apply_compat(test_config(cfg, source.checkpoint, args.work_dir))
    runner = Runner.from_cfg(cfg)
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    load_weights(model, source.checkpoint)
    metrics = runner.test()
    metrics = {k: float(v) if isinstance(v, (int, float)) else v for k, v in metrics.items()}
    for key, value in metrics.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics


cli = console(main)  # the console script alignkit-test

if __name__ == "__main__":
    main()
