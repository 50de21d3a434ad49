"""Train from a config: ``python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--cfg-options ...] [--launcher none|pytorch|slurm]``.

A shim over ``alignkit.cli.train.main`` (see there). Run from a checkout it
imports the checkout's ``alignkit``, installed or not.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignkit.cli.train import cli  # after the sys.path line above, on purpose

if __name__ == "__main__":
    sys.exit(cli())
