"""``CLIPTopNLabeler``: the paper's labeler, on an open_clip CLIP ViT.

Dense embeddings: final-layer patch tokens -> ``ln_post`` -> ``proj``
(``dense_mode='proj'``), the class token excluded by knowing the tower has one.
Ranking: the paper's Eq. 6, ``w_i, s_i = top-n_j { -cos(v_i, t_j) }``, i.e.
``negate=True`` by default: following CLIP Surgery, the paper negates the
cosine of CLIP's final-layer patch tokens, whose similarity maps come out
inverted (background lights up). The *negated* value is the score that is
kept, sampled on (Eq. 7) and compared with ``min_score`` (drop ``<= 0``).
"""
from __future__ import annotations

from alignkit.labelers.base import OpenCLIPTopNLabeler
from alignkit.registry import LABELERS


@LABELERS.register_module()
class CLIPTopNLabeler(OpenCLIPTopNLabeler):
    """Top-n labels from an open_clip CLIP ViT (paper preset: ViT-L-14-336 / openai, n=10, negated).

    See :class:`~alignkit.labelers.base.OpenCLIPTopNLabeler` for every argument.
    """

    def __init__(self, model_name: str, pretrained=None, word_list=None, top_n: int = 10,
                 min_score: float = 0.0, negate: bool = True, prompt: str = "{}", dense_mode: str = "proj",
                 **kwargs) -> None:
        super().__init__(model_name, pretrained, word_list, top_n=top_n, min_score=min_score, negate=negate,
                         prompt=prompt, dense_mode=dense_mode, **kwargs)
