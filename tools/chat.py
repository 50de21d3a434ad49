"""Ask a trained model about an image: ``python tools/chat.py CHECKPOINT --image PATH [--question Q]``.

A shim over ``alignkit.cli.chat.main`` (see there).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignkit.cli.chat import cli  # after the sys.path line above, on purpose

if __name__ == "__main__":
    sys.exit(cli())
