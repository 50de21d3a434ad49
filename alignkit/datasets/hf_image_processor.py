"""Image preprocessing with transformers' own CLIP / SigLIP image processor: LLaVA's pipeline, pixel for pixel.

``HFImageProcessor(model_name='openai/clip-vit-large-patch14-336')`` reads the
model's ``preprocessor_config.json`` and runs transformers' PIL-based
processor (``CLIPImageProcessor`` / ``SiglipImageProcessor`` — named
``...ImageProcessorPil`` since transformers 5, where the plain name became the
torchvision variant), exactly as LLaVA-1.5 calls it:
``processor.preprocess(image, return_tensors='pt')['pixel_values'][0]``.
Training, label extraction and an exported ``LlavaForConditionalGeneration``
therefore see the same pixels.

``pad_to_square`` is LLaVA-1.5's stage-2 ``image_aspect_ratio='pad'``
(``expand2square``): the image is centred on a square canvas filled with
``tuple(int(m * 255) for m in image_mean)`` before the processor runs.

``image_size`` sets another output size on the same processor, as LLaVA's
S² tower (``CLIPVisionTowerS2``) does for its largest scale: CLIP resizes the
shortest edge to it and centre-crops a square of it, SigLIP resizes to the square.

The open_clip twin is :class:`~alignkit.datasets.image_processor.OpenCLIPImageProcessor`;
both have the interface ``LLaVADataset`` and ``tools/extract_labels.py`` use:
``__call__(PIL image) -> Float[3, H, W]``, ``image_size``, ``blank()``,
``fingerprint()``.
"""
from __future__ import annotations

import torch
from PIL import Image

from alignkit.datasets.image_processor import expand_to_square
from alignkit.registry import TRANSFORMS
from alignkit.towers.transformers import model_kind, tower_image_size
from alignkit.utils.validate import check_int

# image_processor_type in a preprocessor_config.json -> the family
_FAMILIES = {
    "CLIPImageProcessor": "clip", "CLIPImageProcessorFast": "clip", "CLIPImageProcessorPil": "clip",
    "SiglipImageProcessor": "siglip", "SiglipImageProcessorFast": "siglip", "SiglipImageProcessorPil": "siglip",
}


# PIL resampling filters by number (PIL.Image.Resampling) -> the names open_clip uses
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def pil_processor_class(family: str):
    """transformers' PIL-based image processor class of ``family`` (4.x: ``CLIPImageProcessor``, 5.x: ``...Pil``)."""
    import transformers

    base = {"clip": "CLIPImageProcessor", "siglip": "SiglipImageProcessor"}[family]
    return getattr(transformers, f"{base}Pil", None) or getattr(transformers, base)


def _hw(size: dict, what: str) -> tuple[int, int]:
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    raise ValueError(f"the image processor's {what} {size!r} does not fix an output size (expected height/width)")


def _resized(processor, family: str, side: int):
    """A new processor of the same class and settings whose output is ``side`` x ``side`` (never mutates the given one)."""
    sizes = dict(size={"height": side, "width": side})
    if family == "clip":  # CLIPImageProcessor: shortest edge, then centre crop
        sizes = dict(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return type(processor).from_dict(processor.to_dict(), **sizes)


def output_size(processor) -> tuple[int, int]:
    """(H, W) of the pixel values ``processor`` produces."""
    if getattr(processor, "do_center_crop", False):
        return _hw(dict(processor.crop_size), "crop_size")
    size = dict(processor.size)
    if "shortest_edge" in size and getattr(processor, "do_resize", True):
        raise ValueError(
            f"the image processor resizes the shortest edge to {size['shortest_edge']} without a centre crop, "
            "so its output size depends on the image; expected do_center_crop=True or size=(height, width)"
        )
    return _hw(size, "size")


@TRANSFORMS.register_module()
class HFImageProcessor:
    """PIL image -> Float[3, H, W] with a transformers CLIP / SigLIP image processor.

    Args:
        model_name: hub name or local folder holding ``preprocessor_config.json``
            (a CLIP or SigLIP processor).
        processor: a transformers image processor object instead of ``model_name``.
        pad_to_square: pad to a square with the mean colour first (LLaVA-1.5 stage 2).
        image_size: output side in pixels instead of the processor's own (module
            docstring; S²'s 1008); None keeps the processor's.
    """

    def __init__(self, model_name: str | None = None, processor=None, pad_to_square: bool = False,
                 image_size: int | None = None) -> None:
        if (model_name is None) == (processor is None):
            raise ValueError("HFImageProcessor needs exactly one of model_name (hub name / folder) or processor")
        if model_name is not None:
            processor = self._load(str(model_name))
        family = _FAMILIES.get(type(processor).__name__)
        if family is None:
            raise ValueError(
                f"image processor {type(processor).__name__} is not a CLIP/SigLIP image processor; "
                f"expected one of {sorted(_FAMILIES)}"
            )
        if image_size is not None:
            processor = _resized(processor, family, check_int("image_size", image_size, low=1))
        if not isinstance(pad_to_square, bool):
            raise ValueError(f"pad_to_square must be True or False, got {pad_to_square!r}")
        self.processor = processor
        self.family = family
        self.model_name = model_name
        self.pad_to_square = pad_to_square
        self.image_size = output_size(processor)
        self.mean = tuple(float(m) for m in processor.image_mean)
        self.std = tuple(float(s) for s in processor.image_std)
        # LLaVA's background: tuple(int(x * 255) for x in image_processor.image_mean).
        self.fill = tuple(int(m * 255) for m in self.mean)
        # OpenCLIPImageProcessor's names for the same settings (label-cache checks, export).
        size = dict(processor.size) if getattr(processor, "do_resize", True) else None
        self.resize_mode = "none" if size is None else ("shortest" if "shortest_edge" in size else "squash")
        resample = getattr(processor, "resample", None)
        self.interpolation = None if resample is None else _RESAMPLE_NAMES.get(int(resample), str(resample))

    @staticmethod
    def _load(name: str):
        from transformers.image_processing_utils import ImageProcessingMixin

        try:
            cfg, _ = ImageProcessingMixin.get_image_processor_dict(name)
        except (OSError, ValueError) as err:
            raise ValueError(f"{name!r}: no preprocessor_config.json could be read ({err})") from err
        kind = cfg.get("image_processor_type")
        if kind not in _FAMILIES:
            raise ValueError(
                f"{name!r} has image_processor_type {kind!r}; expected a CLIP/SigLIP processor ({sorted(_FAMILIES)})"
            )
        return pil_processor_class(_FAMILIES[kind]).from_pretrained(name)

    @classmethod
    def for_tower(cls, model, pad_to_square: bool = False) -> "HFImageProcessor":
        """The family's default processor at the tower's input size (a model built in memory has no config file)."""

        h, w = tower_image_size(model)
        family = model_kind(model)
        if family == "clip":
            proc = pil_processor_class("clip")(size={"shortest_edge": min(h, w)}, crop_size={"height": h, "width": w})
        else:
            proc = pil_processor_class("siglip")(size={"height": h, "width": w})
        return cls(processor=proc, pad_to_square=pad_to_square)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> Float[3, H, W]."""
        if not isinstance(image, Image.Image):
            raise ValueError(f"image must be a PIL.Image, got {type(image).__name__}")
        image = image.convert("RGB")
        if self.pad_to_square:
            image = expand_to_square(image, self.fill)
        return self.processor.preprocess(image, return_tensors="pt")["pixel_values"][0]

    def blank(self) -> torch.Tensor:
        """The zero image a text-only sample carries (LLaVA's ``torch.zeros(3, H, W)``)."""
        return torch.zeros(3, *self.image_size)

    def fingerprint(self) -> dict:
        """Everything that changes the pixels (for label caches and logs).

        ``image_size``, ``mean``, ``std``, ``resize_mode``, ``interpolation``,
        ``pad_to_square`` as ``OpenCLIPImageProcessor`` names them, plus
        ``backend='transformers'``: the two libraries round the resized size
        differently (a one-pixel crop shift on some images), so equal settings
        are not equal pixels.
        """
        p = self.processor
        return dict(
            backend="transformers",
            image_size=list(self.image_size),
            mean=list(self.mean),
            std=list(self.std),
            resize_mode=self.resize_mode,
            interpolation=self.interpolation,
            pad_to_square=self.pad_to_square,
            processor=f"{self.family}_pil",
            resize=dict(p.size) if getattr(p, "do_resize", True) else None,
            crop=dict(p.crop_size) if getattr(p, "do_center_crop", False) else None,
            rescale_factor=float(p.rescale_factor) if getattr(p, "do_rescale", True) else None,
            normalize=bool(getattr(p, "do_normalize", True)),
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.fingerprint().items())
        return f"{type(self).__name__}({args})"
