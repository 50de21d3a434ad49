"""Vision towers: one forward -> the adapter's features and the labeler's dense joint-space embeddings.

Both the vision encoder (``alignkit.models.OpenCLIPVisionEncoder``) and the
labelers (``alignkit.labelers``) run a tower through this package, so the
adapter and the labels come from the same forward pass.

- ``forward_features`` / ``DENSE_MODES`` / ``DenseMode`` (``towers.open_clip``):
  the open_clip tower forward (CLIP ViTs and timm SigLIP trunks).
- ``load_open_clip`` / ``LoadedModel`` (``towers.open_clip_loader``): load an
  open_clip model by tag, file or folder, and say which weights it holds.
"""
from alignkit.towers.open_clip import DENSE_MODES, DenseMode, forward_features
from alignkit.towers.open_clip_loader import LoadedModel, load_open_clip

__all__ = ["DENSE_MODES", "DenseMode", "LoadedModel", "forward_features", "load_open_clip"]
