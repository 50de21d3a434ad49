"""``ModelDescriptionHook``: put the model's description, as JSON data, into every checkpoint.

The analysis and export tools (``tools/chat.py``, ``export_hf.py``,
``visualize_alignment.py``) rebuild a model from a checkpoint alone through
this description (:mod:`alignkit.engine.model_description`), never through the
Python config text mmengine also stores. ``tools/train.py`` adds the hook to
every run; a run whose model config is not plain data (a class object as a
``type``) gets no description, said once in the log, and the tools then need
``--config``.
"""
from __future__ import annotations

import logging

from mmengine.hooks import Hook
from mmengine.logging import print_log

from alignkit.engine.model_description import META_KEY, describe, to_json
from alignkit.registry import HOOKS


@HOOKS.register_module()
class ModelDescriptionHook(Hook):
    """Store ``meta['alignkit_model']`` (JSON of the model config) in each checkpoint."""

    priority = "NORMAL"

    def __init__(self) -> None:
        self._text: str | None = None
        self._described = False

    def _description(self, runner) -> str | None:
        if not self._described:
            self._described = True
            try:
                self._text = to_json(describe(runner.cfg))
            except ValueError as err:
                print_log(f"ModelDescriptionHook: checkpoints get no model description ({err}); tools will need "
                          "--config CONFIG to rebuild the model", logger="current", level=logging.WARNING)
        return self._text

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        text = self._description(runner)
        if text is not None:
            checkpoint.setdefault("meta", {})[META_KEY] = text
