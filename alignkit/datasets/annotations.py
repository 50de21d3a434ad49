"""Read a LLaVA annotation file: a ``.json`` list of rows or ``.jsonl`` (one row per line, as Cambrian ships).

The format follows the extension (``.jsonl`` -> JSON Lines, anything else ->
one JSON list). A file that cannot be read as a whole raises
``AnnotationFileError`` naming the file and where it went wrong: the byte
offset (and line) of invalid UTF-8, the line and column of invalid JSON, the
line of a bad JSONL record. A file with no rows is an error too: a training run
on it would stop at the first batch with an unhelpful message.

What is *inside* a row is not checked here: a row that is not an object, or
has a malformed conversation, is a counted skip of the dataset, not a file error.
"""

from __future__ import annotations

import json
import os

from alignkit.datasets.constants import DataFileError

JSONL_SUFFIXES = (".jsonl",)


class AnnotationFileError(DataFileError):
    """An annotation file that cannot be used; the message names the file and the position."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = str(path)
        super().__init__(f"annotation file {self.path}: {detail}")


def _not_utf8(path: str, data: bytes, err: UnicodeDecodeError, base: int = 0, line: int = 1) -> AnnotationFileError:
    """The error for invalid UTF-8 at ``err.start`` of ``data``, which starts at byte ``base`` / line ``line``."""
    line += data.count(b"\n", 0, err.start)
    bad = data[err.start : err.end]
    return AnnotationFileError(
        path, f"line {line}: byte {bad!r} at byte offset {base + err.start} is not UTF-8 ({err.reason}); "
              "save the file as UTF-8")


def _read_json(path: str) -> list:
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data, e) from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationFileError(path, f"line {e.lineno} column {e.colno} (char {e.pos}): invalid JSON: {e.msg}") from None
    except RecursionError:
        raise AnnotationFileError(path, "invalid JSON: nested too deeply") from None
    if not isinstance(rows, list):
        raise AnnotationFileError(path, f"must hold a JSON list of rows, got a JSON {type(rows).__name__}")
    return rows


def _read_jsonl(path: str) -> list:
    rows = []
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, raw, e, base=offset, line=number) from None
            offset += len(raw)
            if not line.strip():
                continue  # blank lines (a trailing newline) are not rows
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AnnotationFileError(path, f"line {number} column {e.colno}: invalid JSON: {e.msg}") from None
            except RecursionError:
                raise AnnotationFileError(path, f"line {number}: invalid JSON: nested too deeply") from None
    return rows


def read_annotations(path: str | os.PathLike) -> list:
    """The rows of a ``.json`` (a list) or ``.jsonl`` (a row per line) file; ``AnnotationFileError`` otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AnnotationFileError(path, "does not exist" if not os.path.exists(path) else "is not a file")
    rows = _read_jsonl(path) if path.lower().endswith(JSONL_SUFFIXES) else _read_json(path)
    if not rows:
        raise AnnotationFileError(path, "holds no rows")
    return rows
