"""The paper's Figure 6 for a word list: ``python tools/analyze_labels.py LABEL_CACHE_OR_CONFIG --out DIR``.

A shim over ``alignkit.cli.analyze_labels.main`` (see there). Run from a
checkout it imports the checkout's ``alignkit``, installed or not.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignkit.cli.analyze_labels import cli  # after sys.path, on purpose

if __name__ == "__main__":
    sys.exit(cli())
