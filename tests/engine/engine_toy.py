"""A tiny real training set-up for the engine tests, registered in the test-only scope ``alignkit_test``.

A regression through ``alignkit``'s ``MLPAdapter`` (with dropout on its input, so
training draws random numbers) on a seeded synthetic dataset, and two hooks
that stand in for what a test needs to observe: a crash at a chosen iteration
and a per-rank dump of the final weights. ``write_config`` writes a config that
uses them, the way a project config would (``default_scope='alignkit'``).

Configs import this module by name (``custom_imports``): pytest puts this
folder on ``sys.path``; subprocesses get it through ``PYTHONPATH``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import Registry
from torch import nn

from alignkit.registry import ADAPTERS, DATASETS, HOOKS, METRICS, MODELS

SCOPE = "alignkit_test"
TOY_MODELS = Registry("model", parent=MODELS, scope=SCOPE)
TOY_DATASETS = Registry("dataset", parent=DATASETS, scope=SCOPE)
TOY_HOOKS = Registry("hook", parent=HOOKS, scope=SCOPE)
TOY_METRICS = Registry("metric", parent=METRICS, scope=SCOPE)

ENGINE_TESTS = Path(__file__).resolve().parent


@TOY_DATASETS.register_module()
class ToyRegressionDataset(torch.utils.data.Dataset):
    """``num_samples`` rows ``x ~ N(0, 1)^D``, target ``y = tanh(x @ W)`` with a seeded ``W (D, E)``."""

    def __init__(self, num_samples: int = 24, vision_dim: int = 4, llm_dim: int = 3, seed: int = 0,
                 nan_rows: tuple = (), augment: float = 0.0):
        self.augment = augment  # noise drawn from the global RNG per sample: a random data transform
        g = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(num_samples, vision_dim, generator=g)
        self.targets = torch.tanh(self.inputs @ torch.randn(vision_dim, llm_dim, generator=g))
        self.inputs[list(nan_rows), 0] = float("nan")  # rows a broken encoder would give
        self.metainfo = dict(name="toy regression")

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> dict:
        inputs = self.inputs[i] + self.augment * torch.randn(self.inputs.shape[1]) if self.augment else self.inputs[i]
        return dict(inputs=inputs, targets=self.targets[i])


@TOY_MODELS.register_module()
class ToyAdapterRegressor(BaseModel):
    """``adapter(dropout(x))`` regressed on the targets with a mean squared error."""

    def __init__(self, adapter: dict, vision_dim: int = 4, llm_dim: int = 3, dropout: float = 0.25):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.adapter = ADAPTERS.build(adapter, default_args=dict(vision_dim=vision_dim, llm_dim=llm_dim))

    def forward(self, inputs, targets=None, mode: str = "tensor"):
        # Rows with NaN/inf inputs are left out and counted, under the key SEAAligner uses for its patches.
        finite = torch.isfinite(inputs).all(dim=-1)  # (B,)
        out = self.adapter(self.dropout(torch.where(finite[:, None], inputs, 0.0)))  # (B, D) -> (B, E)
        if mode == "loss":
            loss = ((out - targets) ** 2)[finite].mean() if finite.any() else out.sum() * 0
            return dict(loss_mse=loss, align_patches_nonfinite=(~finite).sum().float())
        return out


@TOY_METRICS.register_module()
class ToyMSEMetric(BaseMetric):
    """Mean squared error of the predictions (validation of the toy regression)."""

    def process(self, data_batch, data_samples) -> None:
        self.results.append(((torch.stack(list(data_samples)) - data_batch["targets"]) ** 2).mean().item())

    def compute_metrics(self, results: list) -> dict:
        return dict(toy_mse=sum(results) / len(results))


class SimulatedCrash(RuntimeError):
    """What ``CrashAtIterHook`` raises."""


@TOY_HOOKS.register_module()
class CrashAtIterHook(Hook):
    """Raise before iteration ``at`` (0-based) runs: an interrupted job, after its checkpoints so far."""

    def __init__(self, at: int):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            raise SimulatedCrash(f"simulated crash before iteration {self.at}")


@TOY_HOOKS.register_module()
class CountItersHook(Hook):
    """Counts the training iterations this run executed (a resumed run skips the ones before its checkpoint)."""

    def __init__(self):
        self.count = 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.count += 1


@TOY_HOOKS.register_module()
class DumpWeightsHook(Hook):
    """After training every rank writes ``work_dir/weights_rank{r}.pt``: its weights, what wrapped
    the model, the world size and the inputs of its first batch."""

    def __init__(self):
        self.first_inputs = None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.first_inputs is None:
            self.first_inputs = data_batch["inputs"].clone()

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        dump = dict(
            state_dict=model.state_dict(),
            wrapper=type(runner.model).__name__,
            world_size=runner.world_size,
            first_inputs=self.first_inputs,
        )
        torch.save(dump, Path(runner.work_dir) / f"weights_rank{runner.rank}.pt")


CONFIG = """\
default_scope = 'alignkit'
custom_imports = dict(imports=['engine_toy'], allow_failed_imports=False)
model = dict(type='alignkit_test.ToyAdapterRegressor', adapter=dict(type='MLPAdapter'))
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    dataset=dict(type='alignkit_test.ToyRegressionDataset', num_samples=24),
    sampler=dict(type='InfiniteSampler', shuffle=True, seed=0),
    collate_fn=dict(type='default_collate'),
)
train_cfg = dict(type='IterBasedTrainLoop', max_iters={max_iters}, val_interval=10**9)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end={warmup}),
    dict(type='CosineAnnealingLR', by_epoch=False, begin={warmup}, end={max_iters}),
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={ckpt_interval}),
    logger=dict(type='LoggerHook', interval=1),
)
custom_hooks = [
    dict(type='RNGStateHook'),
    dict(type='alignkit_test.CountItersHook'),
    dict(type='alignkit_test.DumpWeightsHook'),
]
randomness = dict(seed=1234)
log_level = 'WARNING'
"""

# Validation every `val_interval` iterations on 8 held-out rows (a DataLoader, so each run draws from the RNG).
VALIDATION = """\
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    dataset=dict(type='alignkit_test.ToyRegressionDataset', num_samples=8, seed=1),
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
)
val_evaluator = dict(type='alignkit_test.ToyMSEMetric')
val_cfg = dict(type='ValLoop')
"""


def write_config(path: Path, max_iters: int = 10, ckpt_interval: int = 4, val_interval: int | None = None) -> Path:
    """Write the toy config (warm-up of up to 3 iterations, then a cosine decay to ``max_iters``).

    ``val_interval``: validate every that many iterations (default: never).
    """
    if max_iters < 2:
        raise ValueError(f"max_iters must be >= 2 (warm-up, then decay), got {max_iters}")
    warmup = min(3, max_iters - 1)
    text = CONFIG.format(max_iters=max_iters, ckpt_interval=ckpt_interval, warmup=warmup)
    if val_interval is not None:
        text = text.replace("val_interval=10**9)", f"val_interval={val_interval}, val_begin=1)") + VALIDATION
    path.write_text(text)
    return path


def iters_run(runner) -> int:
    """How many iterations the run behind ``runner`` executed itself."""
    (hook,) = [hook for hook in runner.hooks if isinstance(hook, CountItersHook)]
    return hook.count


def weights(runner) -> dict:
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
