"""``LLaVADataset``: LLaVA-Pretrain, LLaVA instruction and Cambrian data, one sample per row.

An annotation file is a JSON list (``.json``) or JSON Lines (``.jsonl``, one row
per line, as Cambrian ships) of rows
``{"id", "image" (optional, relative to its image folder), "conversations": [{"from", "value"}, ...]}``:
``blip_laion_cc_sbu_558k.json`` (stage 1, template ``plain``),
``llava_v1_5_mix665k.json`` or Cambrian's ``.jsonl`` (stage 2, ``vicuna_v1``;
rows without ``image`` are text-only samples). One dataset reads one file
(``ann_file`` + ``image_folder``) or several, each with its own image folder
(``sources=[dict(ann_file=..., image_folder=...), ...]``), in that order.

A file that cannot be read (missing, not UTF-8, invalid JSON, no rows) raises
``AnnotationFileError`` naming the file and the position. A bad *row* is never
trained on, never silently masked and never fatal: whatever goes wrong while
preparing it (a malformed conversation, a missing, unreadable, oversized or
out-of-folder image, text that is not valid Unicode, too long, labels that do
not line up with its tokens, nothing left to supervise — ``BadSample`` — or
any other exception, counted as ``error:<ExceptionType>``), ``__getitem__``
counts it under its reason (``skip_counts()``), logs the first few of each
reason with the row's id, and returns a randomly drawn replacement sample
instead (mmengine's refetch). The returned sample carries
``skipped = {reason: 1}`` for the sample it replaces, so the counts also reach
the main process from DataLoader workers (``llava_collate`` sums them per
batch, ``SkippedSamplesHook`` puts them in the training log).

Images are read by ``image_io.open_image``: 8-bit RGB whatever the file's
mode, at most ``max_image_pixels`` decoded pixels, aspect ratio at most
``max_image_aspect``, and confined to their image folder unless
``allow_outside_root=True``.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections import Counter
from typing import Any

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from alignkit.datasets.annotations import read_annotations
from alignkit.datasets.constants import ERROR_PREFIX, IGNORE_INDEX, IMAGE_TOKEN_INDEX, BadSample, DataFileError
from alignkit.datasets.image_io import DEFAULT_MAX_ASPECT, DEFAULT_MAX_PIXELS, ImageError, open_image
from alignkit.datasets.templates import encode_conversation, get_template
from alignkit.datasets.tokenizers import build_tokenizer
from alignkit.labelers.cache import LabelCache
from alignkit.registry import DATASETS, TRANSFORMS
from alignkit.structures import EMPTY_WORD, PatchLabels
from alignkit.utils.validate import check_int, check_number

_SOURCE_KEYS = ("ann_file", "image_folder")


def _build_image_processor(processor):
    if isinstance(processor, dict):
        processor = TRANSFORMS.build(processor)
    if not callable(processor):
        raise ValueError(f"image_processor must be callable (PIL image -> tensor) or a config dict, got {processor!r}")
    if not hasattr(processor, "blank") and not hasattr(processor, "image_size"):
        raise ValueError("image_processor must have blank() or image_size, for the zero image of text-only rows")
    return processor


class _FileLevel(Exception):
    """Carries an error of a whole file (the label cache) through ``prepare_data``'s per-row catch."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _is_file_name(path: str) -> bool:
    try:
        os.fsencode(path)  # a lone surrogate cannot name a file
    except UnicodeError:
        return False
    return True


def _where(err: BaseException) -> str:
    """``file:line in function`` of the innermost frame of ``err``'s traceback."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "?"
    f = frames[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"


def _printable(text: str) -> str:
    """``text`` with anything a UTF-8 log cannot hold (lone surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _num_words(conversations: Any) -> int:
    if not isinstance(conversations, list):
        return 0
    return sum(
        len(t["value"].split()) for t in conversations if isinstance(t, dict) and isinstance(t.get("value"), str)
    )


@DATASETS.register_module()
class LLaVADataset(BaseDataset):
    """A LLaVA-format dataset (see the module docstring).

    Args:
        ann_file: the ``.json`` or ``.jsonl`` annotation file (relative to
            ``data_root`` if given); or leave it out and give ``sources``.
        tokenizer: a tokenizer, a name/path, or a config dict (``build_tokenizer``).
        template: a template name (``'plain'``, ``'vicuna_v1'``, ...), dict or object.
        image_processor: PIL image -> Float[3, H, W]; an object or a TRANSFORMS
            config such as ``dict(type='OpenCLIPImageProcessor', model_name='ViT-L-14-336',
            pretrained='openai', pad_to_square=True)``.
        image_folder: the folder the rows' ``image`` paths are relative to
            (relative to ``data_root`` if given; ``data_root`` by default).
        sources: several annotation files in one dataset, each with its own
            image folder: ``[dict(ann_file=..., image_folder=...), ...]``
            (both relative to ``data_root`` if given; a source without
            ``image_folder`` uses ``image_folder``). Rows keep the files' order.
        max_image_pixels: the most pixels an image may decode to; a larger
            JPEG is decoded reduced, any other larger image is skipped
            (``image_too_large``).
        max_image_aspect: the largest long/short side ratio (``image_too_large`` above).
        allow_outside_root: read image paths that lead outside their image
            folder (``..``, absolute paths, symlinks); skipped
            (``image_outside_root``) by default.
        max_length: the longest sequence trained on, visual tokens included (2048 in LLaVA-1.5).
        image_token_length: how many LLM positions one image takes (576 for
            CLIP-L/336; LLaVA's own data-side check counts 1).
        truncate: cut over-long samples to ``max_length`` (counted in the
            sample's ``truncated``) instead of skipping them as ``too_long``.
        label_cache: a label-cache directory written by ``tools/extract_labels.py``,
            a dict of ``LabelCache`` kwargs (``root``, ``expect``, ...), or an
            object with ``grid``, ``top_n`` and ``[sample_id] -> PatchLabels``
            (B = 1, ``KeyError`` when missing); samples then carry their labels.
            A directory is opened lazily, in each worker. Its labels must come
            from the same image transform as ``image_processor`` (same padding).
        log_limit: how many skipped samples per reason to log one by one
            (after that, at 100, 1000, 10000, ...).
        data_root, indices, serialize_data, lazy_init, max_refetch, test_mode:
            as in mmengine's ``BaseDataset``; in test mode a bad sample raises.
    """

    def __init__(
        self,
        ann_file: str = "",
        tokenizer=None,
        template="plain",
        image_processor=None,
        image_folder: str = "",
        sources: list[dict] | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        max_image_aspect: float = DEFAULT_MAX_ASPECT,
        allow_outside_root: bool = False,
        max_length: int = 2048,
        image_token_length: int = 1,
        truncate: bool = False,
        label_cache: str | dict | None = None,
        log_limit: int = 10,
        data_root: str = "",
        indices=None,
        serialize_data: bool = True,
        lazy_init: bool = False,
        max_refetch: int = 1000,
        test_mode: bool = False,
    ) -> None:
        check_int("max_length", max_length, low=1)
        check_int("image_token_length", image_token_length, low=1)
        if image_processor is None:
            raise ValueError("image_processor is required (it also sizes the zero image of text-only rows)")
        self.max_image_pixels = check_int("max_image_pixels", max_image_pixels, low=1)
        self.max_image_aspect = check_number("max_image_aspect", max_image_aspect, low=1)
        self.allow_outside_root = bool(allow_outside_root)
        if tokenizer is None:
            raise ValueError("tokenizer is required: a tokenizer, a path or hub name, or a config dict")
        self.tokenizer = build_tokenizer(tokenizer)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer {type(self.tokenizer).__name__} has no pad token; load it with pad_token=...")
        self.pad_token_id = int(self.tokenizer.pad_token_id)
        self.template = get_template(template)
        self.image_processor = _build_image_processor(image_processor)
        self.max_length = max_length
        self.image_token_length = image_token_length
        self.truncate = bool(truncate)
        self.label_cache_cfg, self._label_cache = None, None
        if isinstance(label_cache, (str, os.PathLike)):
            self.label_cache_cfg = dict(root=str(label_cache))
        elif isinstance(label_cache, dict):
            self.label_cache_cfg = dict(label_cache)
        elif label_cache is not None:
            if not all(hasattr(label_cache, a) for a in ("grid", "top_n", "__getitem__")):
                raise ValueError(
                    "label_cache must be a directory, a dict of LabelCache kwargs, or an object with grid, top_n "
                    f"and [sample_id] -> PatchLabels; got {label_cache!r}"
                )
            self._label_cache = label_cache
        self.log_limit = int(log_limit)
        self._skips: Counter = Counter()
        if data_root and image_folder and not os.path.isabs(image_folder):
            image_folder = os.path.join(data_root, image_folder)
        self.image_folder = image_folder or data_root
        self.sources = self._check_sources(ann_file, sources, data_root)
        self.image_folders = [src["image_folder"] for src in self.sources]
        self._lengths = np.zeros(0, dtype=np.int64)
        self._has_image = np.zeros(0, dtype=bool)
        super().__init__(
            ann_file=ann_file,
            data_root=data_root,
            indices=indices,
            serialize_data=serialize_data,
            lazy_init=lazy_init,
            max_refetch=max_refetch,
            test_mode=test_mode,
        )

    # --- annotations -----------------------------------------------------------
    def _check_sources(self, ann_file, sources, data_root: str) -> list[dict]:
        """``[{ann_file, image_folder}]`` with paths joined to ``data_root``; one entry for ``ann_file``."""

        def join(path):
            return os.path.join(data_root, path) if data_root and path and not os.path.isabs(path) else path

        if sources is None:
            if not ann_file:
                raise ValueError("LLaVADataset needs ann_file, or sources=[dict(ann_file=..., image_folder=...)]")
            return [dict(ann_file=join(ann_file), image_folder=self.image_folder)]
        if ann_file:
            raise ValueError(f"give ann_file or sources, not both (ann_file={ann_file!r})")
        if not isinstance(sources, (list, tuple)) or not sources:
            raise ValueError(f"sources must be a non-empty list of dict(ann_file=..., image_folder=...), got {sources!r}")
        out = []
        for i, src in enumerate(sources):
            if not isinstance(src, dict) or not isinstance(src.get("ann_file"), (str, os.PathLike)) \
                    or not src["ann_file"]:
                raise ValueError(f"sources[{i}] must be dict(ann_file=..., image_folder=...), got {src!r}")
            unknown = sorted(set(src) - set(_SOURCE_KEYS))
            if unknown:
                raise ValueError(f"sources[{i}] has unknown keys {unknown}; expected {list(_SOURCE_KEYS)}")
            folder = src.get("image_folder")
            if folder is not None and not isinstance(folder, (str, os.PathLike)):
                raise ValueError(f"sources[{i}]['image_folder'] must be a path, got {folder!r}")
            folder = join(os.fspath(folder)) if folder else self.image_folder
            out.append(dict(ann_file=join(os.fspath(src["ann_file"])), image_folder=folder))
        return out

    def load_data_list(self) -> list[dict]:
        data_list = []
        for source, src in enumerate(self.sources):
            for i, row in enumerate(read_annotations(src["ann_file"])):
                if isinstance(row, dict):
                    conversations = row.get("conversations")
                    sample_id = str(row.get("id", i))  # as extract_labels keys the label cache
                else:  # kept, so that it is counted as a skip (bad_row) rather than dropped
                    conversations, sample_id = None, str(i)
                info = dict(
                    sample_id=sample_id,
                    image=row.get("image") if isinstance(row, dict) else None,
                    conversations=conversations,
                    num_words=_num_words(conversations),
                    source=source,
                    row=i,
                )
                if not isinstance(row, dict):
                    info["bad_row"] = True  # only then: a key less per row over millions of rows
                data_list.append(info)
        return data_list

    def full_init(self) -> None:
        # BaseDataset.full_init, plus the length arrays taken before serialisation
        # empties data_list (and after `indices` picks the subset).
        if self._fully_initialized:
            return
        self.data_list = self.load_data_list()
        if self._indices is not None:
            self.data_list = self._get_unserialized_subset(self._indices)
        self._lengths = np.array([max(d["num_words"], 1) for d in self.data_list], dtype=np.int64)
        self._has_image = np.array([d["image"] is not None for d in self.data_list], dtype=bool)
        if self.serialize_data:
            self.data_bytes, self.data_address = self._serialize_data()
        self._fully_initialized = True

    @property
    def modality_lengths(self) -> np.ndarray:
        """Int64[N]: word count of each row, negated for text-only rows (LLaVA's ``modality_lengths``)."""
        self.full_init()
        return np.where(self._has_image, self._lengths, -self._lengths)

    @property
    def lengths(self) -> np.ndarray:
        """Int64[N]: word count of each row, + 128 for an image (LLaVA's ``lengths``)."""
        self.full_init()
        return self._lengths + 128 * self._has_image

    # --- one sample ------------------------------------------------------------
    @property
    def label_cache(self):
        if self._label_cache is None and self.label_cache_cfg is not None:
            self._label_cache = LabelCache(**self.label_cache_cfg)
        return self._label_cache

    def __getstate__(self) -> dict:
        # Workers reopen the label cache themselves rather than receive its maps.
        state = self.__dict__.copy()
        if self.label_cache_cfg is not None:
            state["_label_cache"] = None
        return state

    def _blank_image(self) -> torch.Tensor:
        blank = getattr(self.image_processor, "blank", None)
        if blank is not None:
            return blank()
        size = self.image_processor.image_size
        h, w = (size, size) if isinstance(size, int) else size
        return torch.zeros(3, h, w)

    def _load_image(self, rel_path: str, source: int) -> tuple[torch.Tensor, tuple[int, int]]:
        try:
            image = open_image(rel_path, root=self.image_folders[source], allow_outside_root=self.allow_outside_root,
                               max_pixels=self.max_image_pixels, max_aspect=self.max_image_aspect)
        except ImageError as e:
            raise BadSample(e.reason, str(e)) from None
        return self.image_processor(image), image.size

    def _fit_length(self, input_ids: list[int], labels: list[int]) -> tuple[list[int], list[int], bool]:
        num_images = input_ids.count(IMAGE_TOKEN_INDEX)
        extra = num_images * (self.image_token_length - 1)
        total = len(input_ids) + extra
        if total <= self.max_length:
            return input_ids, labels, False
        what = f"{total} positions ({len(input_ids)} tokens, {num_images} image(s) of {self.image_token_length})"
        if not self.truncate:
            raise BadSample("too_long", f"{what} > max_length {self.max_length}")
        keep = self.max_length - extra
        if num_images and max(i for i, t in enumerate(input_ids) if t == IMAGE_TOKEN_INDEX) >= keep:
            raise BadSample("too_long", f"{what}: truncating to max_length {self.max_length} would cut the image")
        input_ids, labels = input_ids[:keep], labels[:keep]
        if all(lab == IGNORE_INDEX for lab in labels):
            raise BadSample("no_supervised_tokens", f"{what}: nothing supervised is left after truncation")
        return input_ids, labels, True

    def _patch_labels(self, sample_id: str, has_image: bool) -> PatchLabels | None:
        cache = self.label_cache
        if cache is None:
            return None
        if not has_image:  # an empty (B=1) entry keeps the batch aligned with the images
            p, k = cache.grid[0] * cache.grid[1], cache.top_n
            return PatchLabels(torch.full((1, p, k), EMPTY_WORD, dtype=torch.long), torch.zeros(1, p, k), cache.grid)
        try:
            return cache[sample_id]
        except KeyError as e:
            raise BadSample("missing_labels", str(e)) from None
        except Exception as e:
            # A corrupt shard is the cache's fault, not the row's: stop the run (see prepare_data).
            raise _FileLevel(e) from None

    def prepare_data(self, idx: int) -> dict:
        """The sample at ``idx``; raises ``BadSample`` (with ``sample_id`` set) if it cannot be trained on.

        Any exception other than ``BadSample`` becomes ``BadSample('error:<ExceptionType>')`` with the
        original as its ``__cause__``: one row can never stop a run. A whole file that cannot be used
        (a ``DataFileError``, or any error of the label cache other than a missing id) is raised as it
        is: counting every row of a corrupt shard as skipped would train on a silently shrunken dataset.
        """
        info = self.get_data_info(idx)
        try:
            return self._prepare(info)
        except _FileLevel as e:
            raise e.error from None
        except DataFileError:
            raise
        except BadSample as e:
            err = e
        except Exception as e:  # noqa: BLE001 - counted under its own reason and logged, never swallowed
            err = BadSample(f"{ERROR_PREFIX}{type(e).__name__}", f"{e} (raised at {_where(e)})")
            err.__cause__ = e
        err.sample_id = info["sample_id"]
        err.location = self._location(info)
        raise err

    def _location(self, info: dict) -> str:
        return f"{self.sources[info['source']]['ann_file']} row {info['row']}"

    def _prepare(self, info: dict) -> dict:
        if info.get("bad_row"):
            raise BadSample("bad_row", "the row is not a JSON object")
        sample_id = info["sample_id"]
        rel_path = info["image"]
        if rel_path is not None and not (isinstance(rel_path, str) and rel_path and "\0" not in rel_path
                                         and _is_file_name(rel_path)):
            raise BadSample("bad_row", f"'image' must be one relative path usable as a file name, got {rel_path!r}")
        has_image = rel_path is not None
        input_ids, labels = encode_conversation(info["conversations"], self.template, self.tokenizer, has_image)
        input_ids, labels, truncated = self._fit_length(input_ids, labels)
        patch_labels = self._patch_labels(sample_id, has_image)
        image, size = self._load_image(rel_path, info["source"]) if has_image else (self._blank_image(), None)
        return dict(
            input_ids=torch.tensor(input_ids, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.long),
            image=image,
            has_image=has_image,
            image_size=size,
            sample_id=sample_id,
            patch_labels=patch_labels,
            truncated=truncated,
            pad_token_id=self.pad_token_id,
        )

    # --- bad samples -------------------------------------------------------------
    def _record_skip(self, err: BadSample) -> None:
        self._skips[err.reason] += 1
        n = self._skips[err.reason]
        if n <= self.log_limit or (n >= 100 and str(n).strip("0") == "1"):
            print_log(
                _printable(
                    f"{type(self).__name__}: skipped sample {getattr(err, 'sample_id', '?')!r} "
                    f"({getattr(err, 'location', '?')}) [{err.reason}] {err.detail} "
                    f"({n} skipped for this reason so far in this process)"
                ),
                logger="current",
                level=logging.WARNING,
            )

    def skip_counts(self) -> dict[str, int]:
        """``{reason: count}`` of the samples skipped by this process (workers keep their own;
        the per-batch ``skipped`` counts of ``llava_collate`` cover every process)."""
        return dict(self._skips)

    def __getitem__(self, idx: int) -> dict:
        """The sample at ``idx``, or, if it is bad, a counted skip and a random replacement.

        Only the requested sample's failure is counted; a replacement that fails
        too is counted when the sampler asks for it itself (once per epoch), so
        an epoch's counts are the number of bad samples in it.
        """
        if not self._fully_initialized:
            self.full_init()
        skipped: dict[str, int] = {}
        last = None
        for attempt in range(self.max_refetch + 1):
            try:
                data = self.prepare_data(idx)
            except BadSample as err:
                if self.test_mode:
                    raise
                last = err
                if attempt == 0:
                    self._record_skip(err)
                    skipped = {err.reason: 1}
                idx = self._rand_another()
                continue
            data["skipped"] = skipped
            return data
        raise RuntimeError(
            f"{type(self).__name__}: no trainable sample found in {self.max_refetch + 1} tries; "
            f"skip counts so far: {self.skip_counts()}; the last one: {_printable(str(last))} "
            f"(is the image folder {self.image_folders} right?)"
        ) from last
