"""Load an open_clip model for labelling, with clear errors, and say which weights it holds.

``pretrained`` may be an open_clip tag (``'openai'``: downloaded through the
hub, or read from its cache), a local weights file
(``'/path/open_clip_pytorch_model.bin'``, ``.safetensors``, ``.pt``), or None
for random weights (tests, demos). ``model_name='local-dir:/path'`` reads the
config and weights from a folder (open_clip's own format) and ignores
``pretrained``. Files and folders are identified by sha256 so caches keyed on
them notice when the weights change under the same path.
"""
from __future__ import annotations

import difflib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from alignkit.utils.io import sha256_file_cached

logger = logging.getLogger(__name__)

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz")
PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16")

def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over a model's tensors in key order (identifies random weights)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _dir_sha256(path: Path) -> str:
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name.endswith("config.json")))
    lines = "".join(f"{p.name}:{sha256_file_cached(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass
class LoadedModel:
    """An open_clip model, its eval transform and tokenizer, and where its weights came from."""

    model: torch.nn.Module
    transform: object
    tokenizer: object
    model_name: str
    pretrained: str | None
    weights_kind: str  # 'tag' | 'file' | 'local-dir' | 'hf-hub' | 'random'
    weights_sha256: str | None

    @property
    def weights_id(self) -> str:
        """What identifies the weights in cache keys."""
        if self.weights_sha256 is not None:
            return f"sha256:{self.weights_sha256}"
        if self.weights_kind == "tag":
            return f"tag:{self.pretrained}"
        return self.model_name  # hf-hub:org/repo


def _check_name(model_name) -> None:
    import open_clip

    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty str, got {model_name!r}")
    if model_name.startswith(LOCAL_DIR):
        folder = Path(model_name[len(LOCAL_DIR):])
        if not (folder / "open_clip_config.json").is_file():
            raise ValueError(
                f"model_name {model_name!r}: expected a folder holding open_clip_config.json and the weights"
            )
        return
    if model_name.startswith(HF_HUB):
        return
    known = open_clip.list_models()
    if model_name.replace("/", "-") not in known:
        close = difflib.get_close_matches(model_name, known, n=5, cutoff=0.5)
        raise ValueError(
            f"model_name {model_name!r} is not an open_clip model; "
            + (f"did you mean one of {close}? " if close else "")
            + "see open_clip.list_models(), or use 'local-dir:/path' / 'hf-hub:org/repo'"
        )


def _classify_pretrained(model_name: str, pretrained) -> str:
    import open_clip

    if model_name.startswith((LOCAL_DIR, HF_HUB)):
        if pretrained:
            logger.warning("pretrained=%r is ignored: model_name %r carries its own weights", pretrained, model_name)
        return model_name.split(":", 1)[0]
    if pretrained is None or pretrained == "":
        return "random"
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f"pretrained must be a tag, a weights file path or None, got {type(pretrained).__name__}")
    pretrained = os.fspath(pretrained)
    if os.path.isdir(pretrained):
        raise ValueError(
            f"pretrained={pretrained!r} is a folder; pass a weights file, or model_name='local-dir:{pretrained}'"
        )
    if os.path.exists(pretrained):
        if not os.access(pretrained, os.R_OK):
            raise ValueError(f"pretrained={pretrained!r}: weights file is not readable")
        return "file"
    tags = open_clip.list_pretrained_tags_by_model(model_name.replace("/", "-"))
    if pretrained in tags:
        return "tag"
    if os.sep in pretrained or "/" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES):
        raise ValueError(f"pretrained={pretrained!r}: no such weights file")
    raise ValueError(
        f"pretrained={pretrained!r} is neither a weights file nor an open_clip tag of {model_name!r}; "
        f"known tags: {tags}"
    )


def load_open_clip(model_name: str, pretrained=None, device="cpu", precision: str = "fp32") -> LoadedModel:
    """Create an open_clip model in eval mode with frozen weights.

    Raises:
        ValueError: unknown model name, missing or unreadable weights file,
            unknown tag, unknown precision.
    """
    import open_clip

    _check_name(model_name)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    kind = _classify_pretrained(model_name, pretrained)
    weights_arg = os.fspath(pretrained) if kind in ("file", "tag") else None
    try:
        model, _, transform = open_clip.create_model_and_transforms(
            model_name, pretrained=weights_arg, device=device, precision=precision
        )
    except Exception as err:  # torch.load raises pickle, EOF, key and shape errors on a wrong or broken file
        if kind not in ("file", "local-dir"):
            raise
        what = f"pretrained={pretrained!r}" if kind == "file" else f"model_name={model_name!r}"
        raise ValueError(
            f"{what} could not be loaded as open_clip weights for {model_name!r}: {type(err).__name__}: {err}"
        ) from err
    model.eval()
    model.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(model_name)
    if kind == "file":
        sha = sha256_file_cached(pretrained)
    elif kind == "local-dir":
        sha = _dir_sha256(Path(model_name[len(LOCAL_DIR):]))
    elif kind == "random":
        logger.warning("model %r has random weights (pretrained=None): labels are meaningless", model_name)
        sha = state_dict_sha256(model)
    else:
        sha = None
    return LoadedModel(
        model=model,
        transform=transform,
        tokenizer=tokenizer,
        model_name=model_name,
        pretrained=os.fspath(pretrained) if pretrained else None,
        weights_kind=kind,
        weights_sha256=sha,
    )
