"""A test-only hook for the end-to-end tests (scope ``alignkit_e2e``): every rank dumps its trainable weights."""
from __future__ import annotations

from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.registry import Registry

from alignkit.registry import HOOKS

E2E_HOOKS = Registry("hook", parent=HOOKS, scope="alignkit_e2e")


@E2E_HOOKS.register_module()
class DumpTrainableHook(Hook):
    """After training, rank r writes ``work_dir/trainable_rank{r}.pt``: its trainable parameters and world size."""

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        torch.save(dict(state=state, world_size=runner.world_size),
                   Path(runner.work_dir) / f"trainable_rank{runner.rank}.pt")
