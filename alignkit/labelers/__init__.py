"""Labelers: top-n word labels for every image patch (SEA step 1).

- ``CLIPTopNLabeler`` / ``SigLIPTopNLabeler`` (registered in ``LABELERS``):
  open_clip models, a word list, a cached text bank, chunked top-n.
- ``load_word_list`` / ``WordList`` / ``default_word_list``: word lists.
- ``LabelCache``: reads the offline label cache of ``tools/extract_labels.py``.
- ``chunked_topn`` / ``cosine_topn``: the pure top-n functions.
"""
from alignkit.labelers.base import BaseLabeler, OpenCLIPTopNLabeler
from alignkit.labelers.cache import LabelCache
from alignkit.labelers.clip import CLIPTopNLabeler
from alignkit.labelers.functional import chunked_topn, cosine_topn, drop_below, naive_topn
from alignkit.labelers.siglip import SigLIPTopNLabeler
from alignkit.labelers.text_bank import build_text_bank, default_cache_dir, encode_text_tokens
from alignkit.labelers.word_list import WordList, default_word_list, load_word_list

__all__ = [
    "BaseLabeler",
    "CLIPTopNLabeler",
    "LabelCache",
    "OpenCLIPTopNLabeler",
    "SigLIPTopNLabeler",
    "WordList",
    "build_text_bank",
    "chunked_topn",
    "cosine_topn",
    "default_cache_dir",
    "default_word_list",
    "drop_below",
    "encode_text_tokens",
    "load_word_list",
    "naive_topn",
]
