"""Models: the composition of alignkit's pieces into an MLLM (no new math here).

- ``OpenCLIPVisionEncoder`` / ``HFVisionEncoder``: one tower forward (open_clip / transformers)
  -> adapter features + dense embeddings.
- ``SEAAligner``: labels -> samplers -> word table -> align loss × λ, on plain tensors.
- ``LLaVAModel``: vision encoder -> adapter -> Hugging Face causal LM (+ aligner), an mmengine ``BaseModel``.
- ``splice_visual_tokens``: LLaVA's image-placeholder splicing, vectorised.
- ``save_adapter`` / ``load_adapter`` / ``AdapterArtifactHook``: the stage-1 artifact.

Every class registers itself (``MODELS``, ``HOOKS``) when this package is imported.
"""
from alignkit.models.adapter_artifact_hook import AdapterArtifactHook
from alignkit.models.artifact import AdapterArtifact, load_adapter, load_adapter_into, save_adapter
from alignkit.models.builders import build_llm, build_tokenizer
from alignkit.models.hf_vision_encoder import HFVisionEncoder
from alignkit.models.llava_model import LLaVAModel
from alignkit.models.sea_aligner import SEAAligner
from alignkit.models.splice import Spliced, splice_visual_tokens
from alignkit.models.vision_encoder import OpenCLIPVisionEncoder, VisionOutput

__all__ = [
    "AdapterArtifact",
    "AdapterArtifactHook",
    "HFVisionEncoder",
    "LLaVAModel",
    "OpenCLIPVisionEncoder",
    "SEAAligner",
    "Spliced",
    "VisionOutput",
    "build_llm",
    "build_tokenizer",
    "load_adapter",
    "load_adapter_into",
    "save_adapter",
    "splice_visual_tokens",
]
