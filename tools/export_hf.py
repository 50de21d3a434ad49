"""Export a checkpoint as a Hugging Face LLaVA folder: ``python tools/export_hf.py CHECKPOINT OUT_DIR [--force]``.

A shim over ``alignkit.cli.export_hf.main`` (see there).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignkit.cli.export_hf import cli  # after the sys.path line above, on purpose

if __name__ == "__main__":
    sys.exit(cli())
