"""``AdapterArtifactHook``: write the stage-1 artifact (``adapter.safetensors``) next to the checkpoints.

Stage 1 trains the adapter alone (and the align loss's temperature), so its
useful output is a few MB, not a checkpoint of the whole MLLM. This hook
writes ``<work_dir>/<filename>`` each time a checkpoint is saved and once more
when training ends, from the process that saves checkpoints (rank 0). Stage 2
loads it with ``model.adapter_weights``; ``tools/convert_checkpoint.py`` makes
LLaVA's ``mm_projector.bin`` from it.

Under DeepSpeed ZeRO-3 the adapter's parameters are partitioned: every rank
gathers them (a collective; ``FlexibleRunner`` calls the hooks on every rank,
see fix 7 in ``alignkit.engine.compat``) and rank 0 writes the file.
"""
from __future__ import annotations

import os

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from alignkit.export.artifact import save_adapter
from alignkit.models.zero3 import gathered
from alignkit.registry import HOOKS


@HOOKS.register_module()
class AdapterArtifactHook(Hook):
    """Write the adapter (+ align-loss temperature) as safetensors at each checkpoint and at the end.

    Args:
        filename: file name inside the work dir.
    """

    priority = "LOW"

    def __init__(self, filename: str = "adapter.safetensors") -> None:
        if not isinstance(filename, str) or not filename or os.sep in filename:
            raise ValueError(f"filename must be a plain file name, got {filename!r}")
        self.filename = filename

    def path(self, runner) -> str:
        return os.path.join(runner.work_dir, self.filename)

    def _write(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, "adapter"):
            raise ValueError(f"AdapterArtifactHook needs a model with an `adapter`, got {type(model).__name__}")
        aligner = getattr(model, "aligner", None)
        loss = None if aligner is None else aligner.loss
        params = [*model.adapter.parameters(), *(loss.parameters() if loss is not None else ())]
        with gathered(params):  # ZeRO-3: whole on every rank for this block
            if is_main_process():
                save_adapter(self.path(runner), model.adapter, loss)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runner: main process only; FlexibleRunner + DeepSpeed: every rank (the gather is collective).
        self._write(runner)

    def after_train(self, runner) -> None:
        self._write(runner)
        print_log(f"adapter artifact written to {self.path(runner)}", logger="current")
