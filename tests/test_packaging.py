"""The wheel: console scripts, py.typed and the SEA configs, from a fresh venv with the wheel installed.

The wheel is built from a copy of the sources (the checkout stays clean), installed with ``--no-deps`` into
a ``--system-site-packages`` venv (torch, mmengine ... come from this environment), and used from a folder
outside the checkout, so nothing can be imported from it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train", "test", "extract-labels", "export-hf", "chat", "convert-checkpoint", "visualize-alignment",
           "analyze-labels", "analyze-logs")


def _run(cmd, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the venv has installed
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("alignkit", "projects", "pyproject.toml", "setup.py", "README.md"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist",
                  "."], cwd=src)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("alignkit-*.whl")
    env = tmp / "venv"
    assert _run([sys.executable, "-m", "venv", "--system-site-packages", env], cwd=tmp).returncode == 0
    installed = _run([env / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", wheel], cwd=tmp)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return dict(wheel=wheel, bin=env / "bin", cwd=tmp)


def test_wheel_holds_py_typed_the_configs_and_no_tests(venv):
    names = zipfile.ZipFile(venv["wheel"]).namelist()
    assert "alignkit/py.typed" in names
    leaves = sorted(p.name for p in (ROOT / "projects" / "sea" / "configs").glob("*.py"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("alignkit/configs/sea/") and n.count("/") == 3) \
        == leaves
    assert "alignkit/configs/sea/_base_/schedules/stage1.py" in names
    assert not [n for n in names if n.startswith(("tests/", "projects/"))]


def test_packaged_configs_load_with_their_bases_from_the_venv(venv):
    code = ("import alignkit, sys; from alignkit.project_configs import find_config, list_configs; "
            "from mmengine.config import Config; p = find_config('sea/vicuna7b'); c = Config.fromfile(p); "
            "print(alignkit.__file__); print(p); print(c.model.type, c.train_cfg.max_iters, c.auto_scale_lr.base_batch_size); "
            "print(len(list_configs()))")
    done = _run([venv["bin"] / "python", "-c", code], cwd=venv["cwd"])
    assert done.returncode == 0, done.stderr[-3000:]
    module, path, summary, count = done.stdout.strip().splitlines()[-4:]
    assert str(venv["bin"].parent) in module and str(venv["bin"].parent) in path  # the wheel's copy, not the checkout
    assert summary == "LLaVAModel 2181 256"  # stage-1 preset through _base_ inheritance
    assert int(count) == len(list((ROOT / "projects" / "sea" / "configs").glob("*.py")))


def test_console_scripts_are_installed_and_report_errors_without_a_traceback(venv):
    for name in SCRIPTS:
        assert (venv["bin"] / f"alignkit-{name}").is_file(), name
    done = _run([venv["bin"] / "alignkit-analyze-logs", "--help"], cwd=venv["cwd"])
    assert done.returncode == 0 and done.stdout.startswith("usage: alignkit-analyze-logs")
    assert "``" not in done.stdout
    done = _run([venv["bin"] / "alignkit-analyze-logs", "no/such/run"], cwd=venv["cwd"])
    assert done.returncode == 2
    assert "alignkit-analyze-logs: error: run 'no/such/run' does not exist" in done.stderr
    assert "Traceback" not in done.stderr
