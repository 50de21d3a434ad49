"""Convert the stage-1 adapter to LLaVA's ``mm_projector.bin`` (and back): ``python tools/convert_checkpoint.py SRC DST [--to llava|alignkit]``.

A shim over ``alignkit.cli.convert_checkpoint.main`` (see there).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignkit.cli.convert_checkpoint import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
