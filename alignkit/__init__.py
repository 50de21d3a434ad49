"""alignkit: interchangeable pieces for aligning vision tokens with an LLM's embeddings.

The package import is deliberately light: it pulls in the data structures only.
Components live in their sub-packages (``alignkit.samplers``, ``alignkit.losses``,
``alignkit.adapters``, ...) and register themselves in ``alignkit.registry`` when
imported; configs find them through the registries' lazy ``locations``.
"""
from alignkit.structures import PairSet, PatchLabels

__version__ = "0.1.0"
__all__ = ["PairSet", "PatchLabels", "__version__"]
