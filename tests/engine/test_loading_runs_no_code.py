"""Loading a received file never runs code from it: pickles, URLs, registry names, adapter metadata.

Each malicious file here would write a marker file if anything in it ran; every
test asserts the marker never appears and the refusal names the file and why.
The tools' side (a checkpoint's config text and model description) is in
``tests/tools/test_tools_run_no_code.py``.
"""
from __future__ import annotations

import functools
import http.server
import json
import pickle
import threading
from pathlib import Path

import pytest
import torch
from engine_toy import write_config
from safetensors.torch import save_file

from alignkit.cli.convert_checkpoint import main as convert
from alignkit.cli.train import main as train
from alignkit.engine.compat import load_checkpoint_file
from alignkit.export.artifact import FORMAT, load_adapter
from alignkit.registry import ADAPTERS, MODELS


class _WritesMarker:
    """Unpickling this calls ``exec`` with code that writes ``marker``: what a hostile checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code from a received file ran')",)


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save(dict(state_dict=dict(w=torch.zeros(2)), meta=dict(payload=_WritesMarker(marker))), path)
    return path


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "code from a received file ran"


def test_the_evil_checkpoint_does_run_code_under_a_plain_unpickle(tmp_path):
    # The check below is sensitive: without weights_only, loading the file runs its payload.
    marker = tmp_path / "PLAIN_MARKER"
    path = _evil_checkpoint(tmp_path / "evil.pth", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_weights_only_loader_refuses_a_reduce_payload(tmp_path, marker):
    path = _evil_checkpoint(tmp_path / "evil.pth", marker)
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pth.*builtins\.exec"):
        load_checkpoint_file(str(path))


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("toy") / "toy.py", max_iters=2, ckpt_interval=2)


@pytest.mark.parametrize("how", ["load_from", "resume"])
def test_training_refuses_a_payload_in_load_from_and_resume(tmp_path, marker, toy_config, how):
    path = _evil_checkpoint(tmp_path / "evil.pth", marker)
    args = ["--cfg-options", f"load_from={path}"] if how == "load_from" else ["--resume", str(path)]
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pth.*builtins\.exec"):
        train([str(toy_config), "--work-dir", str(tmp_path / "work"), *args])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """``(folder, base URL)``: a local HTTP server on 127.0.0.1 serving ``folder``; stopped after the test or 120 s."""
    folder = tmp_path / "served"
    folder.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # torch.hub's download cache
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    deadline = threading.Timer(120, server.shutdown)  # a test that hangs cannot keep it serving
    deadline.daemon = True
    deadline.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    deadline.cancel()
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_url_checkpoints_load_weights_only(tmp_path, marker, http_dir, toy_config):
    folder, url = http_dir
    _evil_checkpoint(folder / "evil.pth", marker)
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pth.*builtins\.exec"):
        load_checkpoint_file(f"{url}/evil.pth")
    # the same through mmengine's Runner (load_from=URL), as a config or --cfg-options would set it
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pth.*builtins\.exec"):
        train([str(toy_config), "--work-dir", str(tmp_path / "w1"), "--cfg-options", f"load_from={url}/evil.pth"])

    # a real checkpoint loads from a URL: train 2 iterations, serve iter_2.pth, start a run from it
    runner = train([str(toy_config), "--work-dir", str(tmp_path / "w2")])
    (folder / "good.pth").write_bytes((tmp_path / "w2" / "iter_2.pth").read_bytes())
    loaded = load_checkpoint_file(f"{url}/good.pth")
    model = runner.model
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][key], value), key
    train([str(toy_config), "--work-dir", str(tmp_path / "w3"), "--cfg-options", f"load_from={url}/good.pth",
           "train_cfg.max_iters=0"])


def test_other_remote_schemes_are_refused(tmp_path, toy_config):
    with pytest.raises(ValueError, match=r"s3://bucket/x\.pth.*weights-only"):
        train([str(toy_config), "--work-dir", str(tmp_path / "w"), "--cfg-options", "load_from=s3://bucket/x.pth"])


@pytest.mark.parametrize("registry", [ADAPTERS, MODELS], ids=["root", "child-of-mmengine"])
def test_registry_never_imports_a_dotted_path(tmp_path, marker, registry):
    cmd = ["python", "-c", f"open({str(marker)!r}, 'w')"]
    with pytest.raises(KeyError, match=r"subprocess\.Popen is not in the alignkit::"):
        registry.build(dict(type="subprocess.Popen", args=cmd))
    with pytest.raises(KeyError, match=r"os\.system is not in"):
        registry.build(dict(type="os.system", command=f"touch {marker}"))


def _artifact(path: Path, config: dict) -> Path:
    tensors = {"adapter.proj.weight": torch.zeros(3, 4), "adapter.proj.bias": torch.zeros(3)}
    save_file(tensors, str(path), metadata=dict(format=FORMAT, adapter_type=str(config.get("type")),
                                                adapter_config=json.dumps(config), llava_projector_type="",
                                                temperature=""))
    return path


@pytest.mark.parametrize(
    "config, why",
    [
        (dict(type="subprocess.Popen", args=["sh", "-c", "touch {marker}"]), r"type 'subprocess\.Popen' is not registered"),
        (dict(type="os.system", command="touch {marker}"), r"type 'os\.system' is not registered"),
        (dict(type="LinearAdapter", vision_dim=4, llm_dim=3, bias={"type": "subprocess.Popen"}), r"'bias'.*not a plain"),
        (dict(type="MLPAdapter", vision_dim=4, llm_dim=3, act_kwargs={"x": {"type": "os.system"}}), r"'act_kwargs'"),
    ],
    ids=["dotted-popen", "dotted-system", "nested-type", "nested-dict"],
)
def test_adapter_metadata_names_only_registered_adapters_with_plain_kwargs(tmp_path, marker, config, why):
    config = json.loads(json.dumps(config).replace("{marker}", str(marker)))
    path = _artifact(tmp_path / "adapter.safetensors", config)
    with pytest.raises(ValueError, match=rf"adapter\.safetensors.*{why}"):
        load_adapter(path).build_adapter()
    with pytest.raises(ValueError, match=rf"adapter\.safetensors.*{why}"):
        convert([str(path), str(tmp_path / "mm_projector.bin")])
    assert not (tmp_path / "mm_projector.bin").exists()


def test_adapter_metadata_with_a_registered_type_still_builds(tmp_path):
    path = _artifact(tmp_path / "adapter.safetensors", dict(type="LinearAdapter", vision_dim=4, llm_dim=3, bias=True))
    adapter = load_adapter(path).build_adapter()
    assert type(adapter).__name__ == "LinearAdapter"


def test_llava_projector_bin_goes_through_the_weights_only_loader(tmp_path, marker):
    path = tmp_path / "mm_projector.bin"
    torch.save({"model.mm_projector.weight": torch.zeros(3, 4), "x": _WritesMarker(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"mm_projector\.bin.*builtins\.exec"):
        convert([str(path), str(tmp_path / "adapter.safetensors"), "--to", "alignkit"])
