"""The offline label cache: its format, the writer and the reader, in one package.

``tools/extract_labels.py`` runs a labeler once over a LLaVA-format dataset and
writes the labels with :class:`LabelCacheWriter`; training reads ``PatchLabels``
by sample id through :class:`LabelCache`, after :func:`check_label_cache` has
compared the cache with the model and the images it feeds.

- ``format.py``: the on-disk layout (shards, manifest, encodings) both sides agree on;
- ``writer.py``: ``LabelCacheWriter`` (resumable, atomic, byte-stable);
- ``reader.py``: ``LabelCache`` (memory-mapped; shard values checked on first read);
- ``check.py``: ``check_label_cache`` (cache against model, word list, grid, transform).
"""

from alignkit.labelers.cache.check import check_label_cache, label_cache_mismatches, words_sha256
from alignkit.labelers.cache.format import (
    FAILURES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    META_KEY,
    SHARD_DIR,
    UINT16_EMPTY,
    LabelCacheError,
    canonical_json,
    decode_words,
    diff_fields,
    encode_scores,
    encode_words,
    format_diff,
    read_manifest,
    read_shard_header,
    run_key,
    run_spec,
    sha256_file,
    shard_name,
    transform_spec,
    word_dtype_for,
    write_bytes_atomic,
    write_json_atomic,
    write_jsonl_atomic,
    write_shard,
)
from alignkit.labelers.cache.reader import LabelCache
from alignkit.labelers.cache.writer import LabelCacheWriter, ShardBuffer, ShardRecord, new_manifest

__all__ = [
    "FAILURES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "META_KEY",
    "SHARD_DIR",
    "UINT16_EMPTY",
    "LabelCache",
    "LabelCacheError",
    "LabelCacheWriter",
    "ShardBuffer",
    "ShardRecord",
    "canonical_json",
    "check_label_cache",
    "decode_words",
    "diff_fields",
    "encode_scores",
    "encode_words",
    "format_diff",
    "label_cache_mismatches",
    "new_manifest",
    "read_manifest",
    "read_shard_header",
    "run_key",
    "run_spec",
    "sha256_file",
    "shard_name",
    "transform_spec",
    "word_dtype_for",
    "words_sha256",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_jsonl_atomic",
    "write_shard",
]
