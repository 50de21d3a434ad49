"""Test-only pieces for the DeepSpeed tests (scope ``alignkit_zero``).

- ``ZeroProbeLLaVAModel``: ``LLaVAModel`` that records, right after it is built,
  whether its LLM came out partitioned and how many LLM elements this rank holds.
- ``ZeroProbeHook``: at the first iteration, rank r writes ``probe_rank{r}.pt``:
  its batch, the torch RNG state before the forward, the word table, the
  logged losses of that step and what the model recorded; rank 0 adds the
  whole (gathered) model state, so a single process can replay the step.
"""
from __future__ import annotations

import resource
from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.registry import Registry

from alignkit.models import LLaVAModel
from alignkit.models.zero3 import full_shape, gathered, is_partitioned
from alignkit.registry import HOOKS, MODELS

ZERO_HOOKS = Registry("hook", parent=HOOKS, scope="alignkit_zero")
ZERO_MODELS = Registry("model", parent=MODELS, scope="alignkit_zero")


@ZERO_MODELS.register_module()
class ZeroProbeLLaVAModel(LLaVAModel):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        params = list(self.llm.parameters())
        self.built_llm = dict(
            partitioned=all(is_partitioned(p) for p in params),
            local_elements=sum(p.ds_tensor.numel() if is_partitioned(p) else p.numel() for p in params),
            full_elements=sum(full_shape(p).numel() for p in params),
            max_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        )


@ZERO_HOOKS.register_module()
class ZeroProbeHook(Hook):
    priority = "VERY_HIGH"

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != 0:
            return
        model = runner.model.module
        self._probe = dict(
            batch=data_batch, rng=torch.get_rng_state(), built_llm=model.built_llm, world_size=runner.world_size,
            word_table=None if model.aligner is None else model.aligner.word_table.clone(),
            text_bank=None if model.aligner is None else model.aligner.labeler.bank.clone(),
            adapter_partitioned=all(is_partitioned(p) for p in model.adapter.parameters()),
        )
        with gathered(model.parameters()):  # collective: every rank
            if runner.rank == 0:
                self._probe["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter != 0:  # runner.iter still counts the finished iteration as 0 here
            return
        self._probe["outputs"] = {k: float(v.detach()) for k, v in (outputs or {}).items()}
        self._probe["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        torch.save(self._probe, Path(runner.work_dir) / f"probe_rank{runner.rank}.pt")
