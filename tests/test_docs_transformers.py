"""docs/extending.md's "SEA in your own transformers model" runs as written (both of its python blocks, in order)."""
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
SECTION = "## SEA in your own transformers model"


def test_the_transformers_section_runs(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path))
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    nxt = re.search(r"\n## ", section[len(SECTION):])
    section = section[: len(SECTION) + nxt.start()] if nxt else section
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    scope: dict = {}
    for block in blocks:
        exec(compile(block, f"{DOC}:{SECTION}", "exec"), scope)  # noqa: S102 - our own documentation
    assert "loss_align" in capsys.readouterr().out
    assert scope["loss_align"].requires_grad and scope["visual"].shape == (1, 16, scope["visual"].shape[-1])
