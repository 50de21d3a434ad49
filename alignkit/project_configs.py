"""The configs of alignkit's projects by name, from a checkout or from an installed wheel.

``find_config("sea/vicuna7b.py")`` (or ``"sea/vicuna7b"``) is the path of
``projects/sea/configs/vicuna7b.py``: in a wheel the build copies every
``projects/<name>/configs`` folder to ``alignkit/configs/<name>`` (``setup.py``),
in a checkout (an editable install) it is read where it is. A path to an
existing file is returned as it is, so every tool takes either.
``_base_`` files travel with their configs, so inheritance works from both.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "configs"  # in a wheel
CHECKOUT = Path(__file__).resolve().parents[1] / "projects"  # in a checkout


def config_roots() -> dict[str, Path]:
    """``{project: folder of its configs}``, the wheel's copy first."""
    roots: dict[str, Path] = {}
    if PACKAGED.is_dir():
        roots.update({p.name: p for p in sorted(PACKAGED.iterdir()) if p.is_dir()})
    if CHECKOUT.is_dir():
        for p in sorted(CHECKOUT.glob("*/configs")):
            roots.setdefault(p.parent.name, p)
    return roots


def list_configs() -> list[str]:
    """Every leaf config as ``project/name.py`` (no ``_base_`` files)."""
    return [f"{project}/{p.name}" for project, root in config_roots().items() for p in sorted(root.glob("*.py"))]


def find_config(name: str | os.PathLike) -> str:
    """The path of config ``name``: an existing file, or ``project/config[.py]`` (module docstring)."""
    if os.path.isfile(name):
        return str(name)
    text = str(name)
    project, _, rest = text.partition("/")
    roots = config_roots()
    if rest and project in roots:
        path = roots[project] / (rest if rest.endswith(".py") else rest + ".py")
        if path.is_file():
            return str(path)
    known = ", ".join(list_configs()[:12]) or "none found"
    raise ValueError(f"config {text!r} is neither a file nor a packaged config (project/name.py: {known}, ...)")
