"""Vision towers: one forward -> the adapter's features and the labeler's dense joint-space embeddings.

Both the vision encoders (``alignkit.models``) and the labelers
(``alignkit.labelers``) run a tower through this package, so the adapter and
the labels come from the same forward pass. Two backends, same contract:

- ``alignkit.towers.open_clip``: open_clip CLIP ViTs and timm SigLIP trunks
  (``forward_features``, ``DENSE_MODES``, ``DenseMode``);
  ``alignkit.towers.open_clip_loader``: load them by tag, file or folder and
  say which weights they hold (``load_open_clip``, ``LoadedModel``).
- ``alignkit.towers.transformers``: transformers CLIP / SigLIP towers
  (``forward_features``, ``dense_from_output``, ``DENSE_MODES``);
  ``alignkit.towers.transformers_loader``: load them (``load_transformers_model``,
  ``wrap_transformers_model``).
- ``alignkit.towers.grid.patch_grid``: the (H, W) patch grid of a tower of either backend.
- ``alignkit.towers.multiscale``: S² on any tower (scales, crops, pooling, the
  preprocessing at the largest scale), shared by ``MultiScaleVisionEncoder`` and
  ``MultiScaleLabeler``.
"""
