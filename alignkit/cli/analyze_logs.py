"""``tools/analyze_logs.py RUN [RUN ...] [--keys K ...] --out curves.png``: training curves from runs' logs.

A RUN is a work dir, a timestamped run folder inside one, or a
``scalars.json`` (mmengine's ``LocalVisBackend`` log: one JSON object per
logged step, ``{"loss": ..., "loss_align": ..., "align_temperature": ...,
"lr": ..., "step": N}`` for training and ``{"align/label_top1": ..., "step": N}``
for validation). A work dir holding several runs (one folder per start, e.g.
after ``--resume``) contributes all of them in time order, joined into one
curve per key (a resumed run continues where it stopped).

One panel per key, one line per RUN (named by ``--legend``, else by its
folder), iteration on the x axis. Default keys: ``loss``, ``loss_lm``,
``loss_align``, ``align_temperature`` and every validation metric (``align/...``)
the runs logged; a key no run logged is an error naming the keys there are.
Writes one PNG (``--out``; its folder is created) and prints, per run and key,
the number of points and the first and last values. ``main`` returns
``{run name: {key: (steps, values)}}``.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

from alignkit.cli import console, plain

DEFAULT_KEYS = ("loss", "loss_lm", "loss_align", "align_temperature")


def find_scalars(run: str) -> list[Path]:
    """The ``scalars.json`` files of a RUN (module docstring), oldest run first."""
    path = Path(run)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"run {run!r} does not exist (expected a work dir, a run folder or a scalars.json)")
    found = sorted(path.glob("vis_data/scalars.json")) + sorted(path.glob("*/vis_data/scalars.json"))
    if not found:
        raise ValueError(f"run {run!r} holds no vis_data/scalars.json (was it trained with LocalVisBackend, the "
                         "default?)")
    return found  # timestamped folder names (YYYYMMDD_HHMMSS) sort in time order


def read_scalars(files: Sequence[Path]) -> dict[str, tuple[list[int], list[float]]]:
    """``{key: (steps, values)}`` from scalars.json files; a line that is not JSON is an error naming it."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for file in files:
        for n, line in enumerate(Path(file).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                step = int(row["step"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{file}:{n}: not a scalars.json line ({type(err).__name__}: {err})") from None
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    steps, values = out.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(float(value))
    return out


def pick_keys(runs: dict[str, dict], keys: Sequence[str] | None) -> list[str]:
    logged = sorted(set().union(*(r.keys() for r in runs.values())))
    if keys:
        missing = [k for k in keys if k not in logged]
        if missing:
            raise ValueError(f"--keys {missing} were not logged by any run; logged keys: {logged}")
        return list(keys)
    return [k for k in DEFAULT_KEYS if k in logged] + [k for k in logged if k.startswith("align/")]


def plot(runs: dict[str, dict], keys: Sequence[str], out: str, title: str | None = None) -> None:
    """One panel per key, one line per run; written to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(keys), 2)
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, series in runs.items():
            if key in series:
                steps, values = series[key]
                ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=name)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title or "training curves: " + ", ".join(runs))
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="a work dir, a run folder or a scalars.json")
    p.add_argument("--keys", nargs="+", metavar="KEY", help="what to plot (default: losses, temperature, align/*)")
    p.add_argument("--legend", nargs="+", metavar="NAME", help="one name per RUN (default: the folder names)")
    p.add_argument("--title", help="figure title")
    p.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    args = p.parse_args(argv)
    if args.legend and len(args.legend) != len(args.runs):
        p.error(f"--legend takes one name per RUN: got {len(args.legend)} names for {len(args.runs)} runs")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    runs: dict[str, dict] = {}
    for i, run in enumerate(args.runs):
        name = args.legend[i] if args.legend else Path(run).resolve().name
        if name in runs:
            name = f"{name} ({i + 1})"
        runs[name] = read_scalars(find_scalars(run))
    keys = pick_keys(runs, args.keys)
    if not keys:
        raise ValueError(f"the runs logged none of {list(DEFAULT_KEYS)} nor any align/ metric; pass --keys")
    plot(runs, keys, args.out, args.title)
    for name, series in runs.items():
        for key in keys:
            if key in series:
                steps, values = series[key]
                print(f"{name}  {key}: {len(steps)} points, step {steps[0]}..{steps[-1]}, "
                      f"{values[0]:.4g} -> {values[-1]:.4g}")
    print(f"wrote {args.out}")
    return {name: {k: series[k] for k in keys if k in series} for name, series in runs.items()}


cli = console(main)  # the console script alignkit-analyze-logs

if __name__ == "__main__":
    main()
