"""A checkpoint's alignment metrics and answers: ``python tools/test.py CONFIG CHECKPOINT [--out m.json]``.

A shim over ``alignkit.cli.test.main`` (see there). Run from a checkout it
imports the checkout's ``alignkit``, installed or not.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignkit.cli.test import cli  # after sys.path, on purpose

if __name__ == "__main__":
    sys.exit(cli())
