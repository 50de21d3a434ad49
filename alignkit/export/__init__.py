"""Formats out of alignkit and back in.

- ``artifact``: the stage-1 artifact (``adapter.safetensors``: the adapter and
  the align loss's temperature) — ``save_adapter`` / ``load_adapter`` / ``load_adapter_into``.
- ``llava_projector``: that adapter as LLaVA's ``mm_projector.bin`` and back
  (``to_llava`` / ``to_alignkit``).
- ``hf``: a whole ``LLaVAModel`` as Hugging Face ``LlavaForConditionalGeneration``
  (``build_llava``), with its tokenizer, chat template and image processor.
"""
from alignkit.export.artifact import AdapterArtifact, adapter_config, load_adapter, load_adapter_into, save_adapter
from alignkit.export.llava_projector import LLAVA_PREFIX, to_alignkit, to_llava

__all__ = [
    "LLAVA_PREFIX",
    "AdapterArtifact",
    "adapter_config",
    "load_adapter",
    "load_adapter_into",
    "save_adapter",
    "to_alignkit",
    "to_llava",
]
