"""``patch_grid(tower)``: the (H, W) patch grid of a vision tower, whichever backend built it.

One question a newcomer's code keeps asking (how many patches, in what
layout — ``PatchLabels.grid``, ``WindowSampler``'s windows, ``P`` of the
adapter), answered from the tower's own config, never by hand.
"""
from __future__ import annotations

from alignkit.towers import transformers as hf_tower
from alignkit.towers.open_clip import tower_grid as open_clip_grid


def patch_grid(tower) -> tuple[int, int]:
    """(H, W) patches of ``tower``: P = H * W, patch ``p`` at row ``p // W``, column ``p % W``.

    Accepts an alignkit labeler or vision encoder (their ``grid``), a
    transformers CLIP / SigLIP model (``CLIPModel``, ``CLIPVisionModel``,
    ``SiglipModel``, ``SiglipVisionModel``, ... : image size // patch size of
    the vision config), or an open_clip model or its ``visual`` tower.
    """
    grid = getattr(tower, "grid", None)
    if isinstance(grid, (tuple, list)) and len(grid) == 2 and not callable(grid):
        return int(grid[0]), int(grid[1])
    if hf_tower.is_transformers_tower(tower):
        return hf_tower.tower_grid(tower)
    visual = getattr(tower, "visual", tower)  # an open_clip CLIP model or its image tower
    try:
        return open_clip_grid(visual)
    except (ValueError, ImportError):
        raise ValueError(
            f"no patch grid for {type(tower).__name__}: expected an alignkit labeler / vision encoder, a transformers "
            "CLIP/SigLIP model or an open_clip ViT"
        ) from None
