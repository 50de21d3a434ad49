"""``SigLIPTopNLabeler``: top-n labels from an open_clip SigLIP model (timm trunk, MAP head).

SigLIP has no class token and no projection: its image embedding is the
output of an attention-pool head (timm ``AttentionPoolLatent``) over the
trunk's final-normed tokens. ``dense_mode='attn_pool_value'`` sends each
patch token through that head *alone* — softmax over a single key is 1, so
the head reduces to its value path: ``v`` projection -> out projection ->
residual MLP ``y + mlp(norm(y))`` — and a 1-token image reproduces
``encode_image`` exactly. SO400M/14-384 gives a 27×27 grid.

``negate`` defaults to False here, unlike CLIP: Eq. 6 negates because CLIP's
last-layer *query-key* attention inverts its patch similarity maps (CLIP
Surgery); the value-path tokens used here skip that attention (the MaskCLIP
construction, which keeps the sign), and the paper gives no SigLIP rule. Set
``negate=True`` to apply Eq. 6 literally.
"""
from __future__ import annotations

from alignkit.labelers.base import OpenCLIPTopNLabeler
from alignkit.registry import LABELERS


@LABELERS.register_module()
class SigLIPTopNLabeler(OpenCLIPTopNLabeler):
    """Top-n labels from an open_clip SigLIP model (e.g. ViT-SO400M-14-SigLIP-384 / webli).

    See :class:`~alignkit.labelers.base.OpenCLIPTopNLabeler` for every argument.
    """

    def __init__(self, model_name: str, pretrained=None, word_list=None, top_n: int = 10,
                 min_score: float = 0.0, negate: bool = False, prompt: str = "{}",
                 dense_mode: str = "attn_pool_value", **kwargs) -> None:
        super().__init__(model_name, pretrained, word_list, top_n=top_n, min_score=min_score, negate=negate,
                         prompt=prompt, dense_mode=dense_mode, **kwargs)
