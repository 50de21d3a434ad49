"""``LabelCacheCheckHook``: refuse to start training on a label cache made for another model.

A dataset with ``label_cache=DIR`` hands the model labels someone made earlier.
Before the first step (``before_train``, also on resume) this hook opens the
cache of every dataset of the train and validation loaders and compares it
with what consumes it (``alignkit.labelers.cache.check_label_cache``); a
validation or test run on its own is checked before its first batch:

- the model's labeler, when it has one (its whole fingerprint: backend, model,
  weights, word list, prompt, top-n, grid, transform, ...), else the word list
  of the model's word table (sha256 and V);
- the grid of the model's vision encoder (P patches per image);
- the dataset's ``image_processor`` (the pixels a patch index refers to).

Any difference raises ``LabelCacheError`` naming each field with both values,
before a single step has run. ``tools/train.py`` adds this hook to every
config that does not list it, so it cannot be forgotten.
"""
from __future__ import annotations

from collections.abc import Iterator

from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch import nn

from alignkit.labelers.cache import check_label_cache
from alignkit.registry import HOOKS


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP / FSDP / DeepSpeed wrappers (each keeps it as ``.module``)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def iter_datasets(dataset, path: str) -> Iterator[tuple[str, object]]:
    """``(config path, dataset)`` of ``dataset`` and every dataset it wraps (concatenations, repeats, subsets)."""
    yield path, dataset
    inner = getattr(dataset, "datasets", None)
    if isinstance(inner, (list, tuple)):
        for i, d in enumerate(inner):
            yield from iter_datasets(d, f"{path}.datasets[{i}]")
    elif getattr(dataset, "dataset", None) is not None:
        yield from iter_datasets(dataset.dataset, f"{path}.dataset")


def label_consumer(model: nn.Module, for_eval: bool) -> dict:
    """What of ``model`` a cache must match: ``labeler``, ``words`` (the word table's), ``grid``.

    Training labels feed the aligner (its labeler and word list); validation
    labels feed the alignment metrics (the labeler of ``model.align_evaluator``).
    """
    aligner = getattr(model, "aligner", None)
    labeler = getattr(aligner, "labeler", None)
    words = getattr(aligner, "words", None)
    eval_labeler = getattr(getattr(model, "align_evaluator", None), "labeler", None) if for_eval else None
    if eval_labeler is not None:
        labeler, words = eval_labeler, getattr(eval_labeler, "words", None)
    grid = getattr(getattr(model, "vision_encoder", None), "grid", None)
    return dict(labeler=labeler, words=words, grid=grid)


@HOOKS.register_module()
class LabelCacheCheckHook(Hook):
    """Checks every dataset's label cache against the model before training starts (module docstring)."""

    priority = "VERY_HIGH"

    def __init__(self) -> None:
        self._checked: set[int] = set()  # caches already compared (validation runs many times)

    def before_train(self, runner) -> None:
        self._check(runner, "train_dataloader", runner.train_dataloader, for_eval=False)
        if runner.val_loop is not None:
            self._check(runner, "val_dataloader", runner.val_dataloader, for_eval=True)

    def before_val(self, runner) -> None:  # also a validation run on its own (Runner.val)
        self._check(runner, "val_dataloader", runner.val_dataloader, for_eval=True)

    def before_test(self, runner) -> None:
        self._check(runner, "test_dataloader", runner.test_dataloader, for_eval=True)

    def _check(self, runner, name: str, loader, for_eval: bool) -> None:
        model = unwrap_model(runner.model)
        for path, dataset in iter_datasets(loader.dataset, f"{name}.dataset"):
            cache = getattr(dataset, "label_cache", None)  # opens a cache directory (LLaVADataset)
            if cache is None or not hasattr(cache, "manifest") or id(cache) in self._checked:
                continue  # no cache, in-memory labels handed over by code (nothing recorded), or done
            check_label_cache(
                cache,
                what=f"the model and {path}",
                image_processor=getattr(dataset, "image_processor", None),
                **label_consumer(model, for_eval),
            )
            self._checked.add(id(cache))
            print_log(f"label cache {cache.root} matches the model and {path}", logger="current")
