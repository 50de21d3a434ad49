"""Word-list loading: line endings, what is dropped and counted, the hash, bad files."""
import hashlib

import pytest

from alignkit.labelers.word_list import DEFAULT_WORD_LIST_SIZE, WordList, default_word_list, load_word_list


def write(tmp_path, data: bytes, name="words.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_crlf_blank_whitespace_duplicates_are_dropped_and_counted(tmp_path):
    # lines: 1 cat, 2 '', 3 '  dog ', 4 '\t', 5 cat (dup), 6 bout, 7 bout (dup), 8 'ice cream'
    path = write(tmp_path, b"cat\r\n\r\n  dog \r\n\t\r\ncat\r\nbout\r\nbout\r\nice cream\r\n")
    wl = load_word_list(path)
    assert wl.words == ("cat", "dog", "bout", "ice cream")
    assert (wl.num_lines, wl.blank, wl.whitespace, wl.stripped) == (8, 1, 1, 1)
    assert wl.duplicates == (("cat", 5), ("bout", 7))
    assert wl.source == path
    summary = wl.summary()
    assert "2 duplicate" in summary and "'bout' (line 7)" in summary


def test_sha256_is_of_the_normalised_list(tmp_path):
    messy = load_word_list(write(tmp_path, b"\xef\xbb\xbfcat\r\ndog\r\n\r\ncat\r\n", "a.txt"))
    clean = load_word_list(write(tmp_path, b"cat\ndog", "b.txt"))
    assert messy.sha256 == clean.sha256 == hashlib.sha256(b"cat\ndog").hexdigest()
    other = load_word_list(write(tmp_path, b"dog\ncat\n", "c.txt"))
    assert other.sha256 != clean.sha256  # order is part of the list (word ids)


def test_lone_cr_and_no_final_newline(tmp_path):
    wl = load_word_list(write(tmp_path, b"a\rb\rc"))
    assert wl.words == ("a", "b", "c") and wl.num_lines == 3


def test_nfc_normalisation_merges_equal_spellings(tmp_path):
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    wl = load_word_list(write(tmp_path, f"{composed}\n{decomposed}\ntea\n".encode()))
    assert wl.words == (composed, "tea") and wl.duplicates == ((composed, 2),)


def test_from_words_applies_the_same_rules():
    wl = WordList.from_words(["cat", " dog", "", "cat"])
    assert wl.words == ("cat", "dog") and wl.blank == 1 and wl.duplicates == (("cat", 4),)


def test_empty_file_names_file_and_lines(tmp_path):
    path = write(tmp_path, b"\n  \n\n")
    with pytest.raises(ValueError, match=r"words.txt is empty: no word in its 3 lines"):
        load_word_list(path)


def test_all_duplicate_file_names_word_and_lines(tmp_path):
    path = write(tmp_path, b"cat\ncat\ncat\n")
    with pytest.raises(ValueError, match=r"only 1 distinct word, 'cat' \(line 1\), repeated at lines \[2, 3\]"):
        load_word_list(path)


def test_non_utf8_names_file_and_line(tmp_path):
    path = write(tmp_path, b"cat\ndog\ncaf\xe9\n")  # Latin-1 é on line 3
    with pytest.raises(ValueError, match=r"words.txt: line 3 is not valid UTF-8"):
        load_word_list(path)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope.txt' is not a file"):
        load_word_list(tmp_path / "nope.txt")


def test_default_list_is_offline_sized_and_clean():
    pytest.importorskip("spellchecker", reason="the default word list comes from pyspellchecker")
    wl = default_word_list()
    assert len(wl) == DEFAULT_WORD_LIST_SIZE
    assert len(set(wl.words)) == len(wl) and wl.duplicates == ()
    assert all(w.isascii() and w.isalpha() for w in wl.words)
    assert list(wl.words) == sorted(wl.words)
    for common in ("dog", "house", "tree", "water", "car"):
        assert common in wl.words
    assert load_word_list(None) is wl
