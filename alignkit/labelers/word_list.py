"""Word lists for the labelers: load a one-word-a-line file, or the embedded default.

The paper labels patches with the 12dicts "2of12" list (41,242 words). That file
is not shipped here (nor needed): ``load_word_list(path)`` reads it, or any
other one-word-a-line file, and ``load_word_list()`` with no path returns an
embedded default English list of the same size that works offline on a fresh
install (see :func:`default_word_list`).

Reading is strict and reports what it dropped: CRLF / CR line endings are
accepted, blank and whitespace-only lines are dropped, surrounding whitespace
is stripped, later duplicates of a word are dropped (2of12 has "bout" twice),
every count lands in the returned :class:`WordList`. Words are NFC-normalised
(so two spellings of the same accented word are one word) and otherwise kept as
written: case is not folded, and a line holding a phrase ("ice cream") is one
label. Bytes that are not UTF-8, or a list with fewer than two distinct words,
raise ``ValueError`` naming the file and the line.

``WordList.sha256`` hashes the *normalised* list (the final words joined by
``\\n``), so a file and its cleaned copy hash the same: text-bank and label
caches key on it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

logger = logging.getLogger(__name__)

# Size of the paper's 2of12 list; the default list is cut to the same size.
DEFAULT_WORD_LIST_SIZE = 41_242
MIN_DISTINCT_WORDS = 2


@dataclass(frozen=True)
class WordList:
    """An ordered, duplicate-free word list; word id ``i`` is ``words[i]``.

    Attributes:
        words: the words, in file order (first occurrence of each).
        source: where they came from (a file path or a package description).
        num_lines: lines read (0 for a list built in memory).
        blank: empty lines dropped.
        whitespace: whitespace-only lines dropped.
        stripped: lines whose word had surrounding whitespace removed (kept).
        duplicates: ``(word, line)`` of every later duplicate dropped.
    """

    words: tuple[str, ...]
    source: str
    num_lines: int = 0
    blank: int = 0
    whitespace: int = 0
    stripped: int = 0
    duplicates: tuple[tuple[str, int], ...] = ()
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256("\n".join(self.words).encode("utf-8")).hexdigest()
        object.__setattr__(self, "sha256", digest)

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, index):
        return self.words[index]

    def __iter__(self):
        return iter(self.words)

    @property
    def num_duplicates(self) -> int:
        return len(self.duplicates)

    def summary(self) -> str:
        """One line saying what was kept and what was dropped."""
        dups = ", ".join(f"{w!r} (line {n})" for w, n in self.duplicates[:5])
        more = f", ... {self.num_duplicates - 5} more" if self.num_duplicates > 5 else ""
        return (
            f"word list {self.source}: {len(self.words)} words from {self.num_lines} lines; dropped "
            f"{self.blank} blank, {self.whitespace} whitespace-only, {self.num_duplicates} duplicate"
            + (f" [{dups}{more}]" if self.duplicates else "")
            + f"; stripped {self.stripped}"
        )

    @classmethod
    def from_words(cls, words: Iterable[str], source: str = "<in memory>") -> "WordList":
        """Build a list from strings, with the same cleaning and checks as a file."""
        return _clean(((i + 1, w) for i, w in enumerate(words)), source, num_lines=None)


def _clean(numbered_lines, source: str, num_lines: int | None) -> WordList:
    words: list[str] = []
    seen: dict[str, int] = {}
    blank = whitespace = stripped = 0
    duplicates: list[tuple[str, int]] = []
    count = 0
    for lineno, line in numbered_lines:
        count = lineno
        if not isinstance(line, str):
            raise ValueError(f"word list {source}: entry {lineno} is {type(line).__name__}, expected str")
        if line == "":
            blank += 1
            continue
        word = line.strip()
        if not word:
            whitespace += 1
            continue
        if word != line:
            stripped += 1
        word = unicodedata.normalize("NFC", word)
        if word in seen:
            duplicates.append((word, lineno))
            continue
        seen[word] = lineno
        words.append(word)
    num_lines = count if num_lines is None else num_lines
    if not words:
        raise ValueError(
            f"word list {source} is empty: no word in its {num_lines} lines "
            f"({blank} blank, {whitespace} whitespace-only); expected one word a line"
        )
    if len(words) < MIN_DISTINCT_WORDS:
        first = words[0]
        raise ValueError(
            f"word list {source} has only 1 distinct word, {first!r} (line {seen[first]})"
            + (f", repeated at lines {[n for _, n in duplicates][:10]}" if duplicates else "")
            + f"; expected at least {MIN_DISTINCT_WORDS} distinct words"
        )
    result = WordList(
        words=tuple(words),
        source=source,
        num_lines=num_lines,
        blank=blank,
        whitespace=whitespace,
        stripped=stripped,
        duplicates=tuple(duplicates),
    )
    # Duplicates may hide a mistake (two lists concatenated); blank lines never do.
    if duplicates:
        logger.warning(result.summary())
    else:
        logger.info(result.summary())
    return result


def _read_lines(path: str):
    """Yield ``(line number, text)``; a non-UTF-8 line raises naming file and line."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is not part of the first word
        raw = raw[3:]
    # Normalise CRLF and lone CR first so line numbers match what an editor shows.
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file's final newline does not start a blank line
    for lineno, line in enumerate(lines, start=1):
        try:
            yield lineno, line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"word list {path}: line {lineno} is not valid UTF-8 (byte {err.start} of the line is "
                f"{line[err.start:err.start + 1]!r}); expected a UTF-8 text file, one word a line"
            ) from None


def load_word_list(path: str | os.PathLike | None = None) -> WordList:
    """Load a one-word-a-line file, or the embedded default list when ``path`` is None.

    Args:
        path: a text file (UTF-8, any line endings), or None for
            :func:`default_word_list`.

    Returns:
        A :class:`WordList` (counts of what was dropped, sha256 of the result).

    Raises:
        ValueError: the file is missing or unreadable, is not UTF-8 (names the
            line), or has fewer than two distinct words.
    """
    if path is None:
        return default_word_list()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"word list {path!r} is not a file; expected a one-word-a-line text file or None")
    try:
        lines = list(_read_lines(path))
    except OSError as err:
        raise ValueError(f"word list {path!r} could not be read: {err}") from None
    return _clean(iter(lines), path, num_lines=len(lines))


def _default_source() -> tuple[str, dict[str, int]]:
    try:
        import spellchecker
        from spellchecker import SpellChecker
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "the default word list needs the 'pyspellchecker' package (pip install pyspellchecker); "
            "or pass a word list file, e.g. word_list='/path/to/2of12.txt'"
        ) from err
    counts = SpellChecker(language="en", distance=1).word_frequency.dictionary
    version = getattr(spellchecker, "__version__", "unknown")
    return f"pyspellchecker-{version}:en:top{DEFAULT_WORD_LIST_SIZE}", counts


@lru_cache(maxsize=1)
def default_word_list() -> WordList:
    """The embedded default: the 41,242 most frequent purely alphabetic English words.

    Source: the English word-frequency dictionary that ``pyspellchecker`` ships
    as package data (``spellchecker/resources/en.json.gz``, MIT licence,
    ~160k lower-case words counted on the OpenSubtitles corpus). Kept: words of
    ASCII letters only; the top 41,242 by count (the size of 2of12), ties
    broken alphabetically; then sorted alphabetically like 2of12. The list
    changes only when pyspellchecker's dictionary does, and its sha256 is part
    of every cache key, so a changed dictionary never reuses stale banks.
    """
    source, counts = _default_source()
    alpha = [(w, c) for w, c in counts.items() if w.isascii() and w.isalpha()]
    alpha.sort(key=lambda wc: (-wc[1], wc[0]))
    words = sorted(w for w, _ in alpha[:DEFAULT_WORD_LIST_SIZE])
    return WordList.from_words(words, source=source)


def as_word_list(word_list) -> WordList:
    """Accept a path, None (the default), a :class:`WordList` or a sequence of strings."""
    if isinstance(word_list, WordList):
        return word_list
    if word_list is None or isinstance(word_list, (str, os.PathLike)):
        return load_word_list(word_list)
    if isinstance(word_list, (list, tuple)):
        return WordList.from_words(word_list)
    raise ValueError(
        f"word_list must be a path, None, a WordList or a list of str, got {type(word_list).__name__}"
    )
