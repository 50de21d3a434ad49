"""``HFCLIPTopNLabeler``: the paper's labeler on a Hugging Face transformers ``CLIPModel``.

What LLaVA loads (``openai/clip-vit-large-patch14-336``), labelled as
:class:`~alignkit.labelers.clip.CLIPTopNLabeler` labels the open_clip model:
last-layer patch tokens (class token dropped) -> ``post_layernorm`` ->
``visual_projection`` (``dense_mode='proj'``), ranked by the negated cosine of
Eq. 6 (``negate=True``; see ``clip.py`` for why).
"""
from __future__ import annotations

from alignkit.labelers.hf_base import HFTopNLabeler
from alignkit.registry import LABELERS


@LABELERS.register_module()
class HFCLIPTopNLabeler(HFTopNLabeler):
    """Top-n labels from a transformers CLIP model (preset: openai/clip-vit-large-patch14-336, n=10, negated).

    See :class:`~alignkit.labelers.hf_base.HFTopNLabeler` for every argument.
    """

    def __init__(self, model_name=None, word_list=None, top_n: int = 10, min_score: float = 0.0,
                 negate: bool = True, prompt: str = "{}", dense_mode: str = "proj", **kwargs) -> None:
        super().__init__(model_name, word_list, top_n=top_n, min_score=min_score, negate=negate, prompt=prompt,
                         dense_mode=dense_mode, **kwargs)
