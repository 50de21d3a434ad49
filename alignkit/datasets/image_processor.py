"""CLIP-style image preprocessing from an open_clip model name, without loading weights.

``OpenCLIPImageProcessor(model_name='ViT-L-14-336', pretrained='openai')`` reads
the input size from open_clip's model config and mean/std/resize mode from its
pretrained config, and builds open_clip's own eval transform: resize the
shortest side (bicubic), centre crop, normalise. SigLIP's pretrained configs
ask for ``resize_mode='squash'`` (resize to a square, no crop), which is kept.

``pad_to_square`` is LLaVA-1.5's stage-2 ``image_aspect_ratio='pad'``: the
image is first centred on a square canvas filled with the normalisation mean
as 0–255 integers (``int(m * 255)``, (122, 116, 104) for OpenAI CLIP), so
the padding becomes ~0 after normalisation and nothing is cropped away.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from alignkit.registry import TRANSFORMS
from alignkit.utils.validate import as_pair

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest", "longest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")


def expand_to_square(image: Image.Image, fill: Sequence[int]) -> Image.Image:
    """Centre ``image`` on a square canvas of side ``max(W, H)`` filled with ``fill``.

    The offset of the short side is ``(long - short) // 2``, as in LLaVA's ``expand2square``.
    """
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), tuple(fill))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def _triple(name: str, value) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be 3 floats (one per RGB channel), got {value!r}") from None
    if len(out) != 3:
        raise ValueError(f"{name} must be 3 floats (one per RGB channel), got {value!r}")
    return out


@TRANSFORMS.register_module()
class OpenCLIPImageProcessor:
    """PIL image -> Float[3, H, W] the way an open_clip encoder expects it.

    Args:
        model_name: an open_clip model name (``'ViT-L-14-336'``); gives the input size.
        pretrained: an open_clip pretrained tag of that model (``'openai'``,
            ``'webli'``); gives mean, std, resize mode and interpolation.
        image_size, mean, std, resize_mode, interpolation: explicit values;
            they override what the names give. Without a name: OpenAI CLIP's
            mean/std, ``'shortest'`` resize, bicubic.
        pad_to_square: pad to a square with the mean colour first (LLaVA-1.5 stage 2).

    Nothing is downloaded: only open_clip's bundled configs are read.
    """

    def __init__(
        self,
        model_name: str | None = None,
        pretrained: str | None = None,
        image_size: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        resize_mode: str | None = None,
        interpolation: str | None = None,
        pad_to_square: bool = False,
    ) -> None:
        import open_clip

        cfg: dict = {}
        if model_name is not None:
            model_cfg = open_clip.get_model_config(model_name)
            if model_cfg is None:
                raise ValueError(f"model_name {model_name!r} is not an open_clip model (see open_clip.list_models())")
            cfg["image_size"] = model_cfg["vision_cfg"]["image_size"]
            if pretrained is not None:
                pre = open_clip.get_pretrained_cfg(model_name, pretrained)
                if not pre:
                    tags = open_clip.list_pretrained_tags_by_model(model_name)
                    raise ValueError(
                        f"pretrained {pretrained!r} is not a tag of {model_name!r}; expected one of {tags}"
                    )
                cfg.update({k: pre[k] for k in ("mean", "std", "resize_mode", "interpolation") if k in pre})
        elif pretrained is not None:
            raise ValueError(f"pretrained={pretrained!r} needs a model_name")
        explicit = dict(image_size=image_size, mean=mean, std=std, resize_mode=resize_mode, interpolation=interpolation)
        cfg.update({k: v for k, v in explicit.items() if v is not None})
        if "image_size" not in cfg:
            raise ValueError("OpenCLIPImageProcessor needs a model_name or an image_size")

        self.image_size = as_pair("image_size", cfg["image_size"])
        self.mean = _triple("mean", cfg.get("mean", OPENAI_CLIP_MEAN))
        self.std = _triple("std", cfg.get("std", OPENAI_CLIP_STD))
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self.interpolation = cfg.get("interpolation", "bicubic")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        self.pad_to_square = bool(pad_to_square)
        self.model_name, self.pretrained = model_name, pretrained
        # LLaVA's background: tuple(int(x * 255) for x in image_processor.image_mean).
        self.fill = tuple(int(m * 255) for m in self.mean)
        self.transform = open_clip.image_transform(
            self.image_size,
            is_train=False,
            mean=self.mean,
            std=self.std,
            resize_mode=self.resize_mode,
            interpolation=self.interpolation,
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> Float[3, H, W]."""
        if not isinstance(image, Image.Image):
            raise ValueError(f"image must be a PIL.Image, got {type(image).__name__}")
        image = image.convert("RGB")
        if self.pad_to_square:
            image = expand_to_square(image, self.fill)
        return self.transform(image)

    def blank(self) -> torch.Tensor:
        """The zero image a text-only sample carries (LLaVA's ``torch.zeros(3, H, W)``)."""
        return torch.zeros(3, *self.image_size)

    def fingerprint(self) -> dict:
        """Everything that changes the pixels (for label caches and logs)."""
        return dict(
            image_size=list(self.image_size),
            mean=list(self.mean),
            std=list(self.std),
            resize_mode=self.resize_mode,
            interpolation=self.interpolation,
            pad_to_square=self.pad_to_square,
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.fingerprint().items())
        return f"{type(self).__name__}({args})"
