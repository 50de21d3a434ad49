"""Runner hooks of alignkit; each registers itself in ``alignkit.registry.HOOKS``."""
from alignkit.engine.hooks.adapter_artifact_hook import AdapterArtifactHook
from alignkit.engine.hooks.data_skip_hook import SkippedSamplesHook
from alignkit.engine.hooks.label_cache_check_hook import LabelCacheCheckHook
from alignkit.engine.hooks.model_description_hook import ModelDescriptionHook
from alignkit.engine.hooks.non_finite_hook import NonFinitePatchesHook
from alignkit.engine.hooks.required import require_hooks
from alignkit.engine.hooks.rng_state_hook import RNGStateHook

__all__ = [
    "AdapterArtifactHook",
    "LabelCacheCheckHook",
    "ModelDescriptionHook",
    "NonFinitePatchesHook",
    "RNGStateHook",
    "SkippedSamplesHook",
    "require_hooks",
]
