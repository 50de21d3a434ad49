"""Files that matter: their sha256, and writes that are atomic (a reader sees the old file or the whole new one).

Every hash and every atomic write of alignkit goes through here: the label
cache's shards and manifest, the stage-1 artifact, the text bank, the demo
data, the identity of weight files.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK = 1 << 22  # 4 MiB reads

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk_size: int = CHUNK) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def sha256_file_cached(path: str | os.PathLike) -> str:
    """:func:`sha256_file`, remembered per (real path, size, mtime) for the process (weights read many times)."""
    path = os.path.realpath(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(path)
    return _FILE_HASHES[key]


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (best effort: some filesystems cannot open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, unique: bool = False) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; renamed onto ``path`` when the block succeeds.

    On an error the temporary file is removed and ``path`` is untouched. The
    temporary is ``<name>.tmp``, which a restarted run recognises as a stale
    leftover; with ``unique`` it gets a name of its own, for files that several
    processes may write at once (the last whole file wins).
    """
    path = Path(path)
    if unique:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        os.close(fd)
        tmp = Path(name)
    else:
        tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)  # atomic on POSIX and Windows
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, chunks: Iterable[bytes], unique: bool = False) -> tuple[str, int]:
    """Write ``chunks`` to ``path`` atomically and durably (fsynced); returns their sha256 and size.

    The bytes are hashed on the way, not read back. ``unique``: see :func:`atomic_path`.
    """
    path = Path(path)
    h, n = hashlib.sha256(), 0
    with atomic_path(path, unique) as tmp:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                h.update(chunk)
                n += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(path.parent)
    return h.hexdigest(), n
