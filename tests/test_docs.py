"""The docs cannot drift: every config snippet in them builds, every shell block marked runnable runs.

A ```python block is a *config snippet* when it holds only assignments of
values and ``dict(...)`` calls (what an mmengine config file holds). Every part
it sets is checked: each ``type`` must name a registered class whose
``__init__`` takes the given arguments (those the builder fills in, like an
adapter's widths, may be left out), and samplers and align losses are built for
real. A ``model`` snippet overrides part of a base config, so it is put on top
of the demo config, as a leaf config would be, and the model is built (on the
meta device, ``init_empty=True``: no weights, no download).
Classes a page defines in its own code blocks (``# my_project/components.py``)
are registered for the check and removed again afterwards.

A ```bash block preceded by a ``<!-- runnable -->`` line is run from the
repository root (offline); it must exit 0. Keep those blocks cheap.
"""
from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import alignkit.testing.demo  # noqa: F401  (the demo's tokenizer and ViT, for the demo config)
from alignkit import registry
from alignkit.cli.common import LabelDataSettings

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "projects" / "sea" / "README.md"])
BASE = ROOT / "projects" / "sea" / "configs" / "demo_tiny.py"
BLOCK = re.compile(r"(?P<marker><!-- runnable -->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
COMPONENTS = "# my_project/components.py"
BUILT = {"sampler": registry.SAMPLERS, "align loss": registry.ALIGN_LOSSES}


def blocks(path: Path):
    text = path.read_text()
    for m in BLOCK.finditer(text):
        yield text[: m.start()].count("\n") + 1, m.group("lang"), m.group("body"), bool(m.group("marker"))


def is_config(body: str) -> bool:
    """Only assignments, and no call but ``dict(...)``: what a config file holds."""
    try:
        tree = ast.parse(body)
    except SyntaxError:
        return "dict(" in body and "import " not in body  # a broken config snippet is still one (and fails)
    if not tree.body or not all(isinstance(node, ast.Assign) for node in tree.body):
        return False
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    return bool(calls) and all(isinstance(c.func, ast.Name) and c.func.id == "dict" for c in calls)


SNIPPETS = [(p, line, body) for p in DOCS for line, lang, body, _ in blocks(p) if lang == "python" and is_config(body)]
RUNNABLE = [(p, line, body) for p in DOCS for line, lang, body, run in blocks(p) if run and lang in ("bash", "sh")]


def _ident(item) -> str:
    return f"{item[0].relative_to(ROOT)}:{item[1]}"


def _find(type_name: str):
    """``(registry, class)`` of a registered type, alignkit's registries first, then mmengine's."""
    for reg in vars(registry).values():
        if isinstance(reg, type(registry.MODELS)):
            reg.import_from_location()
            cls = reg.get(type_name)
            if cls is not None:
                return reg, cls
    return None, None


def _check_types(cfg, where: str) -> None:
    """Every dict with a ``type`` below ``cfg``: a registered class that takes its arguments."""
    if isinstance(cfg, (list, tuple)):
        for i, item in enumerate(cfg):
            _check_types(item, f"{where}[{i}]")
        return
    if not isinstance(cfg, dict):
        return
    for key, value in cfg.items():
        _check_types(value, f"{where}.{key}")
    if "type" not in cfg or not isinstance(cfg["type"], str):
        return
    reg, cls = _find(cfg["type"].removeprefix("alignkit."))
    assert cls is not None, f"{where}: type {cfg['type']!r} is not registered"
    args = {k: v for k, v in cfg.items() if k not in ("type", "_delete_")}
    target = cls.__init__ if inspect.isclass(cls) else cls
    try:  # partial: the builder fills some arguments in (an adapter's widths, a sampler's dataset)
        inspect.signature(target).bind_partial(*([None] if inspect.isclass(cls) else []), **args)
    except TypeError as err:
        raise AssertionError(f"{where}: {cfg['type']} does not take {sorted(args)}: {err}") from None
    if reg.name in BUILT and inspect.isclass(cls):
        reg.build(cfg)


@pytest.fixture(scope="module")
def doc_components():
    """Register the classes the pages define in their ``my_project/components.py`` blocks; unregister after."""
    kinds = (registry.SAMPLERS, registry.ADAPTERS, registry.ALIGN_LOSSES, registry.LABELERS)
    for reg in kinds:
        reg.import_from_location()  # alignkit's own classes first: only the pages' classes are removed after
    before = {reg: set(reg.module_dict) for reg in kinds}
    namespace: dict = {}
    for path in DOCS:
        for _, lang, body, _ in blocks(path):
            if lang == "python" and body.startswith(COMPONENTS):
                exec(compile(body, str(path), "exec"), namespace)  # the docs' own code, as a user would run it
    yield
    for reg, names in before.items():
        for name in set(reg.module_dict) - names:
            reg._module_dict.pop(name)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=_ident)
def test_config_snippet_builds(snippet, doc_components, tmp_path):
    path, line, body = snippet
    where = f"{path.relative_to(ROOT)}:{line}"
    values: dict = {}
    exec(compile(body, where, "exec"), {"dict": dict}, values)  # only assignments of values and dict(...)
    if "custom_imports" in values:  # the page's own module: registered by doc_components instead
        assert set(values.pop("custom_imports")) <= {"imports", "allow_failed_imports"}, where
    part = Config(values)
    with DefaultScope.overwrite_default_scope("alignkit"):
        for key in part:
            if key == "label_data":
                LabelDataSettings.from_config(part)
            if key != "model":
                _check_types(part[key], f"{where}: {key}")
        if "model" in part:  # model snippets override parts of a base config: the demo's, here
            os.environ.setdefault("ALIGNKIT_DEMO_DATA", str(tmp_path / "demo_data"))
            cfg = Config.fromfile(BASE)
            cfg.merge_from_dict(dict(model=part.to_dict()["model"]))
            _check_types(cfg.model, f"{where}: model")
            registry.MODELS.build(dict(cfg.model, init_empty=True))


def test_the_docs_hold_config_snippets_and_runnable_blocks():
    assert len(SNIPPETS) >= 5 and RUNNABLE  # the parsers above still find them


@pytest.mark.parametrize("block", RUNNABLE, ids=_ident)
def test_runnable_shell_block_runs(block):
    path, line, body = block
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    script = body.replace("python ", f"{sys.executable} ")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{path.relative_to(ROOT)}:{line} exited {done.returncode}:\n{done.stderr[-3000:]}"
