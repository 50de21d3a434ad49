"""Labelers: top-n word labels for every image patch (SEA step 1).

- ``CLIPTopNLabeler`` / ``SigLIPTopNLabeler`` (registered in ``LABELERS``):
  open_clip models, a word list, a cached text bank, chunked top-n.
- ``HFCLIPTopNLabeler`` / ``HFSigLIPTopNLabeler`` (registered in ``LABELERS``):
  the same on Hugging Face transformers ``CLIPModel`` / ``SiglipModel``.
- ``MultiScaleLabeler`` (registered in ``LABELERS``): the labels of an S²
  model's images (taken at the largest scale, labelled at the base scale).
- ``load_or_build_bank``: the on-disk text-bank cache, for a labeler of your own.
- ``load_word_list`` / ``WordList`` / ``default_word_list``: word lists.
- ``LabelCache``: reads the offline label cache of ``tools/extract_labels.py``.
- ``chunked_topn`` / ``cosine_topn``: the pure top-n functions.
"""
from alignkit.labelers.base import BaseLabeler, OpenCLIPTopNLabeler, TopNLabeler
from alignkit.labelers.cache import LabelCache
from alignkit.labelers.clip import CLIPTopNLabeler
from alignkit.labelers.functional import chunked_topn, cosine_topn, drop_below, naive_topn
from alignkit.labelers.hf_base import HFTopNLabeler, build_hf_text_bank
from alignkit.labelers.hf_clip import HFCLIPTopNLabeler
from alignkit.labelers.hf_siglip import HFSigLIPTopNLabeler
from alignkit.labelers.multiscale import MultiScaleLabeler
from alignkit.labelers.siglip import SigLIPTopNLabeler
from alignkit.labelers.text_bank import build_text_bank, default_cache_dir, encode_text_tokens, load_or_build_bank
from alignkit.labelers.word_list import WordList, default_word_list, load_word_list

__all__ = [
    "BaseLabeler",
    "CLIPTopNLabeler",
    "HFCLIPTopNLabeler",
    "HFSigLIPTopNLabeler",
    "HFTopNLabeler",
    "LabelCache",
    "MultiScaleLabeler",
    "OpenCLIPTopNLabeler",
    "SigLIPTopNLabeler",
    "TopNLabeler",
    "WordList",
    "build_hf_text_bank",
    "build_text_bank",
    "chunked_topn",
    "cosine_topn",
    "default_cache_dir",
    "default_word_list",
    "drop_below",
    "encode_text_tokens",
    "load_or_build_bank",
    "load_word_list",
    "naive_topn",
]
