"""Training machinery around mmengine's Runner: hooks, and the mmengine compatibility fixes.

``alignkit.registry.HOOKS`` and ``METRICS`` look here (lazy ``locations``), so
importing this package registers every hook and metric. ``compat`` holds every workaround
for mmengine 0.10 on current torch and on CPU-only machines; ``apply_compat``
applies them all and is called by ``alignkit.cli.train.main``.
"""
from alignkit.engine.compat import (
    allow_checkpoint_globals,
    apply_compat,
    install_checkpoint_loader,
    load_checkpoint_file,
)
from alignkit.engine.hooks import (
    AdapterArtifactHook,
    LabelCacheCheckHook,
    ModelDescriptionHook,
    NonFinitePatchesHook,
    RNGStateHook,
    SkippedSamplesHook,
)
from alignkit.engine.metrics import AlignmentMetric

__all__ = [
    "AdapterArtifactHook",
    "AlignmentMetric",
    "LabelCacheCheckHook",
    "ModelDescriptionHook",
    "NonFinitePatchesHook",
    "RNGStateHook",
    "SkippedSamplesHook",
    "allow_checkpoint_globals",
    "apply_compat",
    "install_checkpoint_loader",
    "load_checkpoint_file",
]
