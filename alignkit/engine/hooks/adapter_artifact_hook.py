"""``AdapterArtifactHook``: write the stage-1 artifact (``adapter.safetensors``) next to the checkpoints.

Stage 1 trains the adapter alone (and the align loss's temperature), so its
useful output is a few MB, not a checkpoint of the whole MLLM. This hook
writes ``<work_dir>/<filename>`` each time a checkpoint is saved and once more
when training ends, from the process that saves checkpoints (rank 0). Stage 2
loads it with ``model.adapter_weights``. Next to it, the same weights in
LLaVA's layout (``mm_projector.bin``, what LLaVA's ``--pretrain_mm_mlp_adapter``
reads; ``alignkit.export.llava_projector``) when the adapter has a LLaVA
equivalent, so a run can be handed to LLaVA's own code from any stage.

Under DeepSpeed ZeRO-3 the adapter's parameters are partitioned: every rank
reads them whole (``alignkit.models.zero3.full_state_dict``: the optimizer's
fp32 master copy; a collective, and ``FlexibleRunner`` calls the hooks on every
rank, see fix 7 in ``alignkit.engine.compat``) and rank 0 writes the file.
"""
from __future__ import annotations

import os

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from alignkit.export.artifact import save_adapter
from alignkit.models.zero3 import full_state_dict, gathered
from alignkit.registry import HOOKS
from alignkit.utils.io import atomic_path


@HOOKS.register_module()
class AdapterArtifactHook(Hook):
    """Write the adapter (+ align-loss temperature) as safetensors at each checkpoint and at the end.

    Args:
        filename: file name inside the work dir.
        llava_projector: file name of the LLaVA-layout copy (``mm_projector.bin``), or None for none.
            An adapter without a LLaVA equivalent gets none either (said once in the log).
    """

    priority = "LOW"

    def __init__(self, filename: str = "adapter.safetensors", llava_projector: str | None = "mm_projector.bin") -> None:
        for name, value in (("filename", filename), ("llava_projector", llava_projector)):
            if value is None and name == "llava_projector":
                continue
            if not isinstance(value, str) or not value or os.sep in value:
                raise ValueError(f"{name} must be a plain file name, got {value!r}")
        self.filename = filename
        self.llava_projector = llava_projector
        self._said_no_llava = False

    def path(self, runner) -> str:
        return os.path.join(runner.work_dir, self.filename)

    def _write(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, "adapter"):
            raise ValueError(f"AdapterArtifactHook needs a model with an `adapter`, got {type(model).__name__}")
        aligner = getattr(model, "aligner", None)
        loss = None if aligner is None else aligner.loss
        # Whole weights on every rank (collective under ZeRO-3), written by rank 0.
        adapter_state = full_state_dict(model.adapter)
        loss_state = None if loss is None else full_state_dict(loss)
        llava = getattr(model.adapter, "llava_projector_type", None) is not None and self.llava_projector is not None
        llava_state = full_state_dict(model.adapter._require_llava()) if llava else None
        with gathered(() if loss is None else loss.parameters()):  # the temperature in the metadata
            if is_main_process():
                save_adapter(self.path(runner), model.adapter, loss, adapter_state=adapter_state, loss_state=loss_state)
                self._write_llava(runner, model.adapter, llava_state)

    def _write_llava(self, runner, adapter, llava_state: dict | None) -> None:
        if self.llava_projector is None:
            return
        if llava_state is None:
            if not self._said_no_llava:
                print_log(f"{type(adapter).__name__} has no LLaVA mm_projector equivalent: no {self.llava_projector}",
                          logger="current")
                self._said_no_llava = True
            return
        # Imported here: alignkit.export.llava_projector imports alignkit.engine (its weights-only loader).
        from alignkit.export.llava_projector import LLAVA_PREFIX

        state = {LLAVA_PREFIX + k: v for k, v in llava_state.items()}  # to_llava_state_dict's keys
        with atomic_path(os.path.join(runner.work_dir, self.llava_projector)) as tmp:
            torch.save(state, tmp)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runner: main process only; FlexibleRunner + DeepSpeed: every rank (the gather is collective).
        self._write(runner)

    def after_train(self, runner) -> None:
        self._write(runner)
        print_log(f"adapter artifact written to {self.path(runner)}", logger="current")
