"""Write the offline patch-label cache of a LLaVA-format dataset (see ``alignkit.cli.extract_labels``).

python tools/extract_labels.py CONFIG --out DIR [--cfg-options k=v ...] [--device cuda] [--no-progress]
torchrun --nproc_per_node 8 tools/extract_labels.py CONFIG --out DIR
"""

import sys

from alignkit.cli.extract_labels import cli

if __name__ == "__main__":
    sys.exit(cli())
