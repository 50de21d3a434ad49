"""Model tests: text banks of the random demo CLIP go to a temp dir."""
from __future__ import annotations

import pytest

import alignkit.testing.demo  # noqa: F401  (registers the demo CLIP config and demo_tokenizer)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    # Text banks of the random demo CLIP go to a per-session temp dir, not ~/.cache.
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "alignkit_cache"))
