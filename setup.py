"""Build hook (metadata is in pyproject.toml): put the projects' configs into the wheel.

``projects/<name>/configs`` (with its ``_base_``) is copied to
``alignkit/configs/<name>`` in the build, so ``tools/train.py sea/vicuna7b.py``
works from an installed wheel (``alignkit.project_configs``). A checkout reads
them in place and needs no copy.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for configs in sorted((root / "projects").glob("*/configs")):
            dest = Path(self.build_lib) / "alignkit" / "configs" / configs.parent.name
            shutil.copytree(configs, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
