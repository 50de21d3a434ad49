"""Other transformers versions beside the installed one, for checking that exports load there.

``side_transformers("4.45.2")`` returns a folder to put first on ``PYTHONPATH``
of a subprocess: transformers 4.45.2 and the tokenizers / huggingface_hub
releases it accepts, installed with ``pip install --no-deps --target`` once
and reused (torch, numpy, safetensors ... come from the main environment).
Installing needs PyPI; a failure raises with pip's output instead of
skipping. From a shell: ``python -m alignkit.testing.side_packages 4.45.2``
prints the folder, e.g. for ``PYTHONPATH=$(...) python my_eval.py``.

Folder: ``$ALIGNKIT_SIDE_DIR/transformers-<version>``, else
``$XDG_CACHE_HOME/alignkit/side/...``, else ``~/.cache/alignkit/side/...``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# transformers release -> the pins that release's own requirements accept (tokenizers is the tight one:
# 4.45 needs >=0.20,<0.21, 4.57 needs >=0.22,<=0.23.0; the main environment's 0.23.x fits neither).
SIDE_TRANSFORMERS = {
    "4.45.2": ("transformers==4.45.2", "tokenizers==0.20.3", "huggingface_hub==0.36.0"),
    "4.57.6": ("transformers==4.57.6", "tokenizers==0.22.1", "huggingface_hub==0.36.0"),
}


def side_root() -> Path:
    if os.environ.get("ALIGNKIT_SIDE_DIR"):
        return Path(os.environ["ALIGNKIT_SIDE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "alignkit" / "side"


def side_transformers(version: str) -> Path:
    """The folder holding transformers ``version`` (installed on first use; module docstring)."""
    if version not in SIDE_TRANSFORMERS:
        raise ValueError(f"no side install recipe for transformers {version!r}; known: {sorted(SIDE_TRANSFORMERS)}")
    target = side_root() / f"transformers-{version}"
    if (target / "transformers" / "__init__.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--target", str(tmp), *SIDE_TRANSFORMERS[version]]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"installing transformers {version} into {target} failed ({' '.join(cmd)}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    try:
        os.replace(tmp, target)  # atomic: a half-installed folder is never taken for a finished one
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


if __name__ == "__main__":
    for v in sys.argv[1:] or sorted(SIDE_TRANSFORMERS):
        print(side_transformers(v))
