"""Load a transformers CLIP / SigLIP model for alignkit, with clear errors, and say which weights it holds.

``load_transformers_model(model_name)`` takes a hub name
(``'openai/clip-vit-large-patch14-336'``: downloaded, or read from the hub
cache) or a local folder written by ``save_pretrained`` (config, weights,
tokenizer, ``preprocessor_config.json``). It returns a
:class:`LoadedTransformersModel`: the model in eval mode with frozen weights,
its tokenizer and its image processor (:class:`~alignkit.datasets.hf_image_processor.HFImageProcessor`,
transformers' own CLIP / SigLIP processor), and an identity of the weights for
cache keys (sha256 of a folder's files; hub name + commit for a hub model).

A model already in memory is wrapped with :func:`wrap_transformers_model`.

Checks, each a ``ValueError`` before any forward:

- the model must be a CLIP / SigLIP vision-language model (``model_type``
  ``'clip'`` / ``'siglip'``), or a vision model with its projection plus a
  separate text model (``text_model_name``);
- a CLIP vision model without ``visual_projection`` weights cannot give dense
  embeddings (transformers would silently initialise the missing projection
  at random);
- the text side's output width must equal the tower's joint-space width C;
- the image processor's output size must equal the tower's input size.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from alignkit.towers.open_clip_loader import state_dict_sha256
from alignkit.towers.transformers import (
    KINDS,
    VLM_TYPES,
    get_dense_mode,
    joint_dim,
    model_kind,
    text_embed_dim,
    tower_grid,
    tower_image_size,
    vision_core,
    vision_only,
)
from alignkit.utils.io import sha256_file_cached
from alignkit.datasets.hf_image_processor import HFImageProcessor

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_VISION_ONLY = {"clip_vision_model": "CLIPVisionModelWithProjection", "siglip_vision_model": "SiglipVisionModel"}
_TEXT_ONLY = {"clip_text_model": "CLIPTextModelWithProjection", "siglip_text_model": "SiglipTextModel"}
_FULL = {"clip": "CLIPModel", "siglip": "SiglipModel"}
# The projection each vision-only class must have loaded (not initialised) for dense embeddings.
_NEEDED_KEYS = {"CLIPVisionModelWithProjection": "visual_projection.weight",
                "CLIPTextModelWithProjection": "text_projection.weight"}


@dataclass
class LoadedTransformersModel:
    """A transformers CLIP/SigLIP model, its tokenizer and image processor, and where its weights came from.

    ``model`` holds the vision tower (and the text tower for a full model);
    ``text_model`` is the text side (``model`` itself for a ``CLIPModel`` /
    ``SiglipModel``). ``model_name`` is what the user named (hub name, folder,
    or a label for a wrapped object).
    """

    model: torch.nn.Module
    tokenizer: object
    image_processor: object
    model_name: str
    weights_kind: str  # 'local-dir' | 'hub' | 'object'
    weights_sha256: str | None
    text_model: torch.nn.Module | None = None
    text_model_name: str | None = None
    revision: str | None = None

    @property
    def kind(self) -> str:
        return model_kind(self.model)

    @property
    def weights_id(self) -> str:
        """What identifies the weights (and tokenizer) in cache keys."""
        if self.weights_sha256 is not None:
            return f"sha256:{self.weights_sha256}"
        return f"hub:{self.model_name}@{self.revision}"

    @property
    def transform(self):
        return self.image_processor


def _dir_sha256(path: Path) -> str:
    """sha256 over every file of a ``save_pretrained`` folder (weights, configs, tokenizer, processor)."""
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    lines = "".join(f"{p.name}:{sha256_file_cached(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _config_of(name: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        where = "folder" if os.path.isdir(name) else "hub name"
        raise ValueError(f"model_name {name!r}: no transformers config could be read from this {where} ({err})") from err


def _load_class(cls_name: str, name: str, dtype, device):
    import transformers

    cls = getattr(transformers, cls_name)
    model, info = cls.from_pretrained(name, dtype=dtype, output_loading_info=True)
    needed = _NEEDED_KEYS.get(cls_name)
    if needed is not None and needed in set(info.get("missing_keys", ())):
        raise ValueError(
            f"{name!r} has no {needed.split('.')[0]} weights: a {cls_name} without its projection cannot map "
            "patch tokens into the image-text space (dense embeddings); load the full CLIPModel of the same weights"
        )
    return model.to(device).eval().requires_grad_(False)


def _revision(model) -> str | None:
    return getattr(model.config, "_commit_hash", None)


def _identity(name: str, model) -> tuple[str, str | None]:
    if os.path.isdir(name):
        return "local-dir", _dir_sha256(Path(name))
    return "hub", None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ValueError(f"{name!r}: no tokenizer could be loaded for the text bank ({err})") from err


def load_transformers_model(
    model_name: str,
    text_model_name: str | None = None,
    device="cpu",
    precision: str = "fp32",
    tokenizer=None,
    with_text: bool = True,
) -> LoadedTransformersModel:
    """Load a CLIP/SigLIP model (module docstring) in eval mode with frozen weights.

    Args:
        model_name: hub name or ``save_pretrained`` folder of a ``CLIPModel`` /
            ``SiglipModel`` (or of a vision model with its projection, with
            ``text_model_name``).
        text_model_name: a separate text model (``CLIPTextModelWithProjection``,
            ``SiglipTextModel``); None: the text tower of ``model_name``.
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` weights.
        tokenizer: a tokenizer object or a name/folder; None: ``AutoTokenizer``
            of the text model.
        with_text: False loads the vision side only (a vision encoder needs no
            text tower, no tokenizer).
    """

    if not isinstance(model_name, (str, os.PathLike)) or not os.fspath(model_name):
        raise ValueError(f"model_name must be a hub name or a local folder (str), got {model_name!r}")
    model_name = os.fspath(model_name)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    config = _config_of(model_name)
    mtype = getattr(config, "model_type", None)
    if mtype in _FULL:
        cls_name = _FULL[mtype]
    elif mtype in _VISION_ONLY:
        cls_name = _VISION_ONLY[mtype]
        if with_text and text_model_name is None:
            raise ValueError(
                f"model_name {model_name!r} is a vision-only {mtype!r} model; a labeler also needs the text tower: "
                "pass text_model_name= (a CLIPTextModelWithProjection / SiglipTextModel) or the full model"
            )
    else:
        raise ValueError(
            f"model_name {model_name!r} is a {mtype!r} model, not a CLIP/SigLIP vision-language model; expected "
            f"model_type one of {list(VLM_TYPES)} (or {sorted(_VISION_ONLY)} with a text_model_name)"
        )
    model = _load_class(cls_name, model_name, dtype, device)
    if not with_text:
        model = vision_only(model)  # the text tower is dropped (freed) when nothing needs it
    kind, sha = _identity(model_name, model)

    text_model = None
    if with_text and text_model_name is not None:
        tcfg = _config_of(text_model_name)
        ttype = getattr(tcfg, "model_type", None)
        if ttype not in _TEXT_ONLY and ttype not in _FULL:
            raise ValueError(f"text_model_name {text_model_name!r} is a {ttype!r} model, not a CLIP/SigLIP text model")
        if KINDS[ttype] != KINDS[mtype]:
            raise ValueError(
                f"text_model_name {text_model_name!r} is {KINDS[ttype]!r} but model_name {model_name!r} is "
                f"{KINDS[mtype]!r}; both must be the same family"
            )
        text_model = _load_class(_TEXT_ONLY.get(ttype, _FULL.get(ttype)), text_model_name, dtype, device)
        if os.path.isdir(text_model_name) and sha is not None:
            sha = hashlib.sha256(f"{sha}+{_dir_sha256(Path(text_model_name))}".encode()).hexdigest()
        elif not os.path.isdir(text_model_name):
            sha = None
    tok = None
    if with_text:
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tok = load_tokenizer(os.fspath(tokenizer or text_model_name or model_name))
        else:
            tok = tokenizer
    processor = HFImageProcessor(model_name=model_name)
    loaded = LoadedTransformersModel(
        model=model, tokenizer=tok, image_processor=processor, model_name=model_name, weights_kind=kind,
        weights_sha256=sha, text_model=text_model if text_model is not None else (model if with_text else None),
        text_model_name=text_model_name, revision=_revision(model),
    )
    check_loaded(loaded, need_text=with_text)
    return loaded


def wrap_transformers_model(
    model,
    tokenizer=None,
    image_processor=None,
    text_model=None,
    model_name: str | None = None,
) -> LoadedTransformersModel:
    """A :class:`LoadedTransformersModel` around a model already in memory (weights identified by content).

    ``image_processor``: an ``HFImageProcessor``, a transformers image
    processor (wrapped), or None (built from the model's vision config with the
    family's default mean/std).
    """

    kind = model_kind(model)
    model.eval().requires_grad_(False)
    if text_model is None and hasattr(model, "text_model"):
        text_model = model
    if image_processor is None:
        image_processor = HFImageProcessor.for_tower(model)
    elif not isinstance(image_processor, HFImageProcessor):
        image_processor = HFImageProcessor(processor=image_processor)
    sha = state_dict_sha256(model)
    if text_model is not None and text_model is not model:
        sha = hashlib.sha256(f"{sha}+{state_dict_sha256(text_model)}".encode()).hexdigest()
    loaded = LoadedTransformersModel(
        model=model, tokenizer=tokenizer, image_processor=image_processor,
        model_name=model_name or f"{type(model).__name__}({kind})", weights_kind="object", weights_sha256=sha,
        text_model=text_model,
    )
    check_loaded(loaded, need_text=text_model is not None)
    return loaded


def check_loaded(loaded: LoadedTransformersModel, need_text: bool = True, dense_mode: str | None = None) -> None:
    """The named checks of the module docstring."""
    model = loaded.model
    kind = model_kind(model)
    vision_core(model)
    if dense_mode is not None:
        get_dense_mode(dense_mode).check(model)
    if need_text:
        if loaded.text_model is None:
            raise ValueError(f"{loaded.model_name!r} has no text tower; pass a text model for the text bank")
        if model_kind(loaded.text_model) != kind:
            raise ValueError(f"the text model is {model_kind(loaded.text_model)!r}, the tower {kind!r}")
        if loaded.tokenizer is None:
            raise ValueError(f"{loaded.model_name!r}: the text bank needs a tokenizer, got None")
        c_text, c_img = text_embed_dim(loaded.text_model), joint_dim(model)
        if c_text != c_img:
            raise ValueError(
                f"the text model's output width {c_text} differs from the tower's joint-space width C={c_img} "
                f"({loaded.model_name!r}); the text bank and the dense embeddings must share one space"
            )
    size = tuple(loaded.image_processor.image_size)
    if size != tower_image_size(model):
        raise ValueError(
            f"the image processor of {loaded.model_name!r} produces {size[0]}x{size[1]} images but the tower "
            f"expects {tower_image_size(model)[0]}x{tower_image_size(model)[1]} (grid {tower_grid(model)}); "
            "fix preprocessor_config.json (crop_size / size) or pass a matching image processor"
        )
