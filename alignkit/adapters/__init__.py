"""Adapters (LLaVA's "projectors"): map vision features ``(..., D)`` to LLM-space tokens ``(..., E)``.

Each class registers itself in ``alignkit.registry.ADAPTERS`` under its name;
configs build one with ``dict(type='MLPAdapter', depth=2)`` and the model
injects ``vision_dim``/``llm_dim``.
"""
from alignkit.adapters.base import BaseAdapter
from alignkit.adapters.linear_adapter import LinearAdapter
from alignkit.adapters.mlp_adapter import ACTIVATIONS, MLPAdapter

__all__ = ["ACTIVATIONS", "BaseAdapter", "LinearAdapter", "MLPAdapter"]
