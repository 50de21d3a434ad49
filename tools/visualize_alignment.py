"""The paper's Figure 1 for a model: ``python tools/visualize_alignment.py CHECKPOINT_OR_CONFIG [CHECKPOINT] IMAGE... --out DIR``.

A shim over ``alignkit.cli.visualize_alignment.main`` (see there). Run from a
checkout it imports the checkout's ``alignkit``, installed or not.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignkit.cli.visualize_alignment import cli  # after sys.path, on purpose

if __name__ == "__main__":
    sys.exit(cli())
