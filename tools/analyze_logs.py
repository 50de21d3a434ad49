"""Training curves from runs' logs: ``python tools/analyze_logs.py RUN [RUN ...] --out curves.png``.

A shim over ``alignkit.cli.analyze_logs.main`` (see there). Run from a
checkout it imports the checkout's ``alignkit``, installed or not.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignkit.cli.analyze_logs import cli  # after sys.path, on purpose

if __name__ == "__main__":
    sys.exit(cli())
