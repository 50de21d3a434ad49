"""The model description a checkpoint carries: how the tools rebuild its model, as data, never as code.

mmengine stores the training config's Python text in a checkpoint
(``meta['cfg']``) and dumps it as ``<work_dir>/<name>.py``; building a model
from either runs whatever Python a received checkpoint or folder holds.
alignkit writes its own description instead (``ModelDescriptionHook``, added
to every run by ``tools/train.py``): ``meta['alignkit_model']``, a JSON text of
plain values only::

    {"format": "alignkit.model/1", "default_scope": "alignkit",
     "custom_imports": ["alignkit.models", "alignkit.engine", ...],
     "seed": 42,
     "model": {"type": "LLaVAModel", ...},                  # cfg.model
     "data": {"template": "plain", "image_processor": {...}}}  # from train_dataloader.dataset

Read back (:func:`config_from_description`), it is checked before anything is
built, and refused with the file and the reason when:

- it is not JSON of dicts, lists, str, int, float, bool and None;
- a ``type`` anywhere in it is not a class or function registered in one of
  alignkit's registries (no dotted import paths, no other package's scope);
- ``custom_imports`` names a module outside the ``alignkit`` package (importing
  alignkit's own modules registers their components and runs nothing else);
- ``default_scope`` is not ``'alignkit'``, or any ``trust_remote_code`` is true
  (transformers would run Python shipped with the weights).

A config the user names on the command line is trusted as it is; this module
is only for what a checkpoint brings along.
"""
from __future__ import annotations

import importlib
import json
import math

from mmengine.config import Config

from alignkit import registry as _registry

FORMAT = "alignkit.model/1"
META_KEY = "alignkit_model"
TRUSTED_PACKAGE = "alignkit"
_PLAIN = (str, int, float, bool, type(None))
_DATA_KEYS = ("template", "image_processor")


class UntrustedDescriptionError(ValueError):
    """A model description read from a file asks for something that is not plain alignkit data."""


def _plain(value, where: str):
    """``value`` with ConfigDicts as dicts and tuples as lists; ValueError at the first non-plain leaf."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a str")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} has no JSON form")
    if isinstance(value, _PLAIN):
        return value
    raise ValueError(f"{where}: {type(value).__name__} {value!r} is not a plain value (dict, list, str, number, bool, None)")


def _imports_of(cfg) -> list:
    custom = cfg.get("custom_imports") or {}
    imports = custom.get("imports", []) if isinstance(custom, dict) else []
    return [imports] if isinstance(imports, str) else list(imports)


def describe(cfg: Config) -> dict:
    """The description of ``cfg``'s model (module docstring); ValueError when the config holds non-plain values."""
    dataset = (cfg.get("train_dataloader") or {}).get("dataset") or {}
    desc = dict(
        format=FORMAT,
        default_scope=cfg.get("default_scope") or _registry.SCOPE,
        custom_imports=_imports_of(cfg),
        seed=(cfg.get("randomness") or {}).get("seed"),
        model=cfg.get("model"),
        data={key: dataset[key] for key in _DATA_KEYS if isinstance(dataset, dict) and key in dataset},
    )
    return _plain(desc, "config")


def to_json(desc: dict) -> str:
    """Deterministic text: sorted keys, so the same config gives the same bytes."""
    return json.dumps(desc, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _alignkit_names() -> dict[str, list[str]]:
    """``{name: [registry names]}`` of everything registered in alignkit's own registries (not mmengine's)."""
    names: dict[str, list[str]] = {}
    for registry in vars(_registry).values():
        if isinstance(registry, _registry.AlignkitRegistry):
            registry.import_from_location()
            for name in registry.module_dict:
                names.setdefault(name, []).append(registry.name)
    return names


def _walk(value, where: str, visit) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            visit(key, item, f"{where}.{key}")
            _walk(item, f"{where}.{key}", visit)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{where}[{i}]", visit)


def check_description(desc, source: str) -> None:
    """Refuse (:class:`UntrustedDescriptionError`, naming ``source``) a description that is more than data."""

    def refuse(why: str):
        raise UntrustedDescriptionError(
            f"{source}: refused the model description it carries: {why}. Nothing from it was imported or run; "
            "to build from a config you trust, pass it explicitly (--config CONFIG)"
        )

    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        got = desc.get("format") if isinstance(desc, dict) else type(desc).__name__
        refuse(f"format {got!r}, expected {FORMAT!r}")
    try:
        _plain(desc, "description")
    except ValueError as err:
        refuse(str(err))
    if desc.get("default_scope") != _registry.SCOPE:
        refuse(f"default_scope {desc.get('default_scope')!r}, expected {_registry.SCOPE!r}")
    imports = desc.get("custom_imports")
    if not isinstance(imports, list) or not all(isinstance(m, str) for m in imports):
        refuse(f"custom_imports must be a list of module names, got {imports!r}")
    outside = [m for m in imports if m != TRUSTED_PACKAGE and not m.startswith(TRUSTED_PACKAGE + ".")]
    if outside:
        refuse(f"custom_imports {outside} are outside the {TRUSTED_PACKAGE!r} package")
    if not isinstance(desc.get("model"), dict) or not isinstance(desc.get("data", {}), dict):
        refuse("'model' and 'data' must be dicts")
    for module in imports:  # alignkit's own modules: they register components (the demo's tower, tokenizer)
        importlib.import_module(module)
    known = _alignkit_names()

    def visit(key, value, where):
        if key == "type":
            name = value[len(_registry.SCOPE) + 1:] if isinstance(value, str) and value.startswith(
                _registry.SCOPE + ".") else value
            if not isinstance(name, str) or name not in known:
                refuse(f"{where} = {value!r} is not registered in alignkit's registries (a name read from a file "
                       "resolves only there: no import paths, no other package)")
        elif key == "trust_remote_code" and value:
            refuse(f"{where} = {value!r} would run Python shipped with the weights")

    _walk({"model": desc["model"], "data": desc.get("data", {})}, "description", visit)


def config_from_description(text, source: str) -> Config:
    """A ``Config`` (model, seed, scope, imports, training data's template and image processor) from the JSON text."""
    if not isinstance(text, str):
        raise UntrustedDescriptionError(f"{source}: the model description is a {type(text).__name__}, not JSON text")
    try:
        desc = json.loads(text)
    except json.JSONDecodeError as err:
        raise UntrustedDescriptionError(f"{source}: the model description is not valid JSON: {err}") from None
    check_description(desc, source)
    cfg_dict = dict(
        default_scope=desc["default_scope"],
        custom_imports=dict(imports=desc["custom_imports"], allow_failed_imports=False),
        randomness=dict(seed=desc.get("seed")),
        model=desc["model"],
        train_dataloader=dict(dataset=desc.get("data", {})),
    )
    return Config(cfg_dict, cfg_text=json.dumps(desc, indent=1), filename=source)
