"""The tools given a checkpoint alone build its model from data, never from code that came with it.

A hostile checkpoint folder carries Python in the config text mmengine stores
(``meta['cfg']``) and in a ``.py`` next to the checkpoint (where mmengine dumps
the config); both would write a marker file if executed. The model description
alignkit stores (``meta['alignkit_model']``) is JSON, and one that names an
import path, a module outside alignkit or ``trust_remote_code`` is refused,
naming the checkpoint and the reason. ``tools/chat.py``, ``export_hf.py`` and
``visualize_alignment.py`` all load through ``alignkit.cli.common``.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from alignkit.cli.chat import main as chat
from alignkit.cli.common import resolve
from alignkit.cli.convert_checkpoint import main as convert
from alignkit.cli.export_hf import main as export_hf
from alignkit.cli.visualize_alignment import main as visualize
from alignkit.engine.model_description import META_KEY, UntrustedDescriptionError


def _python_writing(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('config code ran')\nmodel = dict(type='LLaVAModel')\n"


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "code from a received file ran"


@pytest.fixture(scope="module")
def demo_state(demo_checkpoint):
    # Test-made file: a full unpickle is fine here, the file is ours.
    return torch.load(demo_checkpoint["ckpt"], map_location="cpu", weights_only=False)


def _received(tmp_path: Path, state: dict, marker: Path, description=None, drop_description=False) -> str:
    """A received folder: the checkpoint with Python config text in its meta, and a dumped ``.py`` next to it."""
    folder = tmp_path / "received"
    folder.mkdir()
    meta = dict(state["meta"], cfg=_python_writing(marker))
    if drop_description:
        meta.pop(META_KEY)
    elif description is not None:
        meta[META_KEY] = description if isinstance(description, str) else json.dumps(description)
    torch.save(dict(state, meta=meta), folder / "iter_2.pth")
    (folder / "demo_tiny.py").write_text(_python_writing(marker))
    return str(folder / "iter_2.pth")


def _run(tool: str, ckpt: str, demo: dict, tmp_path: Path):
    image = str(demo["data"] / "images" / "coffee.png")
    if tool == "chat":
        return chat([ckpt, "--image", image, "--question", "What is this?", "--max-new-tokens", "2"])
    if tool == "export_hf":
        return export_hf([ckpt, str(tmp_path / "export")])
    return visualize([ckpt, image, "--out", str(tmp_path / "fig")])


TOOLS = ["chat", "export_hf", "visualize_alignment"]


@pytest.mark.parametrize("tool", TOOLS)
def test_config_text_in_meta_and_dumped_py_never_run(tmp_path, marker, demo_checkpoint, demo_state, tool):
    ckpt = _received(tmp_path, demo_state, marker)
    _run(tool, ckpt, demo_checkpoint, tmp_path)  # works from the stored description


@pytest.mark.parametrize("tool", TOOLS)
def test_checkpoint_without_description_is_refused_not_executed(tmp_path, marker, demo_checkpoint, demo_state, tool):
    ckpt = _received(tmp_path, demo_state, marker, drop_description=True)
    with pytest.raises(ValueError, match=r"iter_2\.pth.*carries no alignkit model description.*--config"):
        _run(tool, ckpt, demo_checkpoint, tmp_path)


def _edited(state: dict, edit) -> dict:
    desc = json.loads(state["meta"][META_KEY])
    edit(desc)
    return desc


def _set(path: str, value):
    def edit(desc):
        node = desc
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


@pytest.mark.parametrize(
    "edit, why",
    [
        (_set("model.adapter.type", "subprocess.Popen"), r"model\.adapter\.type = 'subprocess\.Popen' is not registered"),
        (_set("model.type", "os.system"), r"model\.type = 'os\.system' is not registered"),
        (_set("data.image_processor.type", "mmpretrain.Evil"), r"'mmpretrain\.Evil' is not registered"),
        (_set("custom_imports", ["alignkit.models", "evil_marker_module"]), r"\['evil_marker_module'\] are outside"),
        (_set("model.llm.kwargs", {"trust_remote_code": True}), r"trust_remote_code = True would run Python"),
        (_set("default_scope", "mmdet"), r"default_scope 'mmdet'"),
        (_set("model.adapter.act_kwargs", {"fn": {"__reduce__": 1}, "x": 1.5}), None),  # plain data: allowed here
        (lambda desc: desc.update(format="mmengine.config/1"), r"format 'mmengine\.config/1'"),
    ],
    ids=["dotted-nested", "dotted-top", "other-scope", "import", "remote-code", "scope", "plain-ok", "format"],
)
def test_description_naming_code_is_refused(tmp_path, marker, demo_checkpoint, demo_state, monkeypatch, edit, why):
    # A module that would write the marker if imported, importable by name.
    (tmp_path / "evil_marker_module.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = _received(tmp_path, demo_state, marker, description=_edited(demo_state, edit))
    if why is None:
        cfg, _ = resolve(ckpt)
        assert cfg.model.adapter.act_kwargs == {"fn": {"__reduce__": 1}, "x": 1.5}
        return
    with pytest.raises(UntrustedDescriptionError, match=rf"iter_2\.pth.*refused the model description.*{why}"):
        resolve(ckpt)


def test_description_that_is_not_json_is_refused(tmp_path, marker, demo_state):
    ckpt = _received(tmp_path, demo_state, marker, description="model = dict(type='LLaVAModel')")
    with pytest.raises(UntrustedDescriptionError, match=r"iter_2\.pth.*not valid JSON"):
        resolve(ckpt)


def test_a_config_the_user_names_is_used_as_it_is(tmp_path, demo_checkpoint, demo_state):
    # --config CONFIG is the user's own choice: trusted, and it wins over the stored description.

    config = Path(__file__).resolve().parents[2] / "projects" / "sea" / "configs" / "demo_tiny.py"
    cfg, source = resolve(str(config), demo_checkpoint["ckpt"])
    assert source.config == str(config) and cfg.filename == str(config)


class _WritesMarker:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pickle code ran')",)


@pytest.mark.parametrize("tool", [*TOOLS, "convert_checkpoint"])
def test_a_pickle_payload_is_refused_by_every_tool(tmp_path, marker, tool):
    ckpt = tmp_path / "iter_2.pth"
    torch.save(dict(state_dict={"adapter.layers.0.weight": torch.zeros(2, 2)}, meta=dict(x=_WritesMarker(marker))), ckpt)
    image = tmp_path / "img.png"
    Image.new("RGB", (8, 8)).save(image)
    calls = {
        "chat": lambda: chat([str(ckpt), "--image", str(image)]),
        "export_hf": lambda: export_hf([str(ckpt), str(tmp_path / "export")]),
        "visualize_alignment": lambda: visualize([str(ckpt), str(image), "--out", str(tmp_path / "fig")]),
        "convert_checkpoint": lambda: convert([str(ckpt), str(tmp_path / "mm_projector.bin")]),
    }
    with pytest.raises(pickle.UnpicklingError, match=r"iter_2\.pth holds objects that a weights_only load refuses.*exec"):
        calls[tool]()
