"""``HFSigLIPTopNLabeler``: top-n labels from a Hugging Face transformers ``SiglipModel``.

The transformers twin of :class:`~alignkit.labelers.siglip.SigLIPTopNLabeler`:
no class token, no projection; every patch token (after ``post_layernorm``)
goes alone through ``SiglipMultiheadAttentionPoolingHead``, which reduces to
its value path (``dense_mode='attn_pool_value'``). ``negate`` defaults to
False, as for the open_clip SigLIP labeler (see ``siglip.py`` for why).
"""
from __future__ import annotations

from alignkit.labelers.hf_base import HFTopNLabeler
from alignkit.registry import LABELERS


@LABELERS.register_module()
class HFSigLIPTopNLabeler(HFTopNLabeler):
    """Top-n labels from a transformers SigLIP model (e.g. google/siglip-so400m-patch14-384).

    See :class:`~alignkit.labelers.hf_base.HFTopNLabeler` for every argument.
    """

    def __init__(self, model_name=None, word_list=None, top_n: int = 10, min_score: float = 0.0,
                 negate: bool = False, prompt: str = "{}", dense_mode: str = "attn_pool_value", **kwargs) -> None:
        super().__init__(model_name, word_list, top_n=top_n, min_score=min_score, negate=negate, prompt=prompt,
                         dense_mode=dense_mode, **kwargs)
