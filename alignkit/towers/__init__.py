"""Vision towers: one forward -> the adapter's features and the labeler's dense joint-space embeddings.

- ``alignkit.towers.transformers``: transformers CLIP / SigLIP towers
  (``forward_features``, ``dense_from_output``, ``DENSE_MODES``);
  ``alignkit.towers.transformers_loader``: load them (``load_transformers_model``,
  ``wrap_transformers_model``).
- ``alignkit.towers.grid.patch_grid``: the (H, W) patch grid of a tower of either backend.
"""
