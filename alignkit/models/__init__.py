"""Models: the composition of alignkit's pieces into an MLLM (no new math here).

- ``OpenCLIPVisionEncoder`` / ``HFVisionEncoder``: one tower forward (open_clip / transformers)
  -> adapter features + dense embeddings.
- ``MultiScaleVisionEncoder``: S² around either (crops of several scales, one
  tower forward, scales concatenated along channels; base-scale dense embeddings).
- ``SEAAligner``: labels -> samplers -> word table -> align loss × λ, on plain tensors.
- ``LLaVAModel``: vision encoder -> adapter -> Hugging Face causal LM (+ aligner), an mmengine ``BaseModel``.
- ``splice_visual_tokens``: LLaVA's image-placeholder splicing, vectorised.

Every class registers itself (``MODELS``) when this package is imported. The stage-1
artifact (``save_adapter`` / ``load_adapter``) is in ``alignkit.export``, its hook
(``AdapterArtifactHook``) in ``alignkit.engine.hooks``.
"""
from alignkit.models.builders import build_llm
from alignkit.models.hf_vision_encoder import HFVisionEncoder
from alignkit.models.llava_model import LLaVAModel
from alignkit.models.multiscale_vision_encoder import MultiScaleVisionEncoder
from alignkit.models.sea_aligner import SEAAligner
from alignkit.models.splice import Spliced, splice_visual_tokens
from alignkit.models.vision_encoder import OpenCLIPVisionEncoder, VisionOutput

__all__ = [
    "HFVisionEncoder",
    "LLaVAModel",
    "MultiScaleVisionEncoder",
    "OpenCLIPVisionEncoder",
    "SEAAligner",
    "Spliced",
    "VisionOutput",
    "build_llm",
    "splice_visual_tokens",
]
