"""LLaVA data: formats, conversation templates, tokenizers, the image opener, preprocessing, collate, samplers.

Importing this package registers ``LLaVADataset`` (DATASETS),
``OpenCLIPImageProcessor`` / ``HFImageProcessor`` (TRANSFORMS), ``llava_collate`` (FUNCTIONS) and
``LengthGroupedSampler`` (DATA_SAMPLERS); the registries find them here lazily.
"""

from alignkit.datasets.annotations import AnnotationFileError, read_annotations
from alignkit.datasets.collate import llava_collate
from alignkit.datasets.constants import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    SKIP_REASONS,
    BadSample,
    DataFileError,
)
from alignkit.datasets.image_io import (
    ImageError,
    ImageNotFound,
    ImageOutsideRoot,
    ImageTooLarge,
    ImageUnreadable,
    open_image,
)
from alignkit.datasets.hf_image_processor import HFImageProcessor
from alignkit.datasets.image_processor import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    OpenCLIPImageProcessor,
    expand_to_square,
)
from alignkit.datasets.llava_dataset import LLaVADataset
from alignkit.datasets.length_grouped_sampler import LengthGroupedSampler, length_grouped_indices
from alignkit.datasets.templates import (
    TEMPLATES,
    ChatTemplate,
    ConversationTemplate,
    PlainTemplate,
    RoleFormat,
    Segment,
    encode_conversation,
    get_template,
    tokenize_with_image,
)
from alignkit.datasets.tokenizers import SentencePieceTokenizer, build_tokenizer, load_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "IMAGE_TOKEN_INDEX",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "SKIP_REASONS",
    "TEMPLATES",
    "AnnotationFileError",
    "BadSample",
    "ChatTemplate",
    "ConversationTemplate",
    "DataFileError",
    "HFImageProcessor",
    "ImageError",
    "ImageNotFound",
    "ImageOutsideRoot",
    "ImageTooLarge",
    "ImageUnreadable",
    "LLaVADataset",
    "LengthGroupedSampler",
    "OpenCLIPImageProcessor",
    "PlainTemplate",
    "RoleFormat",
    "Segment",
    "SentencePieceTokenizer",
    "build_tokenizer",
    "encode_conversation",
    "expand_to_square",
    "get_template",
    "length_grouped_indices",
    "llava_collate",
    "load_tokenizer",
    "open_image",
    "read_annotations",
    "tokenize_with_image",
]
