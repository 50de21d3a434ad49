"""A trained demo checkpoint shared by the tool tests (export, chat): trained once per session."""

import pytest
from helpers import DEMO

from alignkit.cli.train import main as train
from alignkit.testing.demo import _caption_words, write_demo_data



@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory):
    """The demo trained for 2 iterations with a small word list (the captions' words), validated at the end.

    Returns dict(base, data, ckpt): ``data`` holds the demo photographs under ``images/``.
    """
    base = tmp_path_factory.mktemp("demo_checkpoint")
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNKIT_DEMO_DATA", str(base / "data"))
    mp.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    write_demo_data(base / "data")
    words = base / "words.txt"
    words.write_text("\n".join(_caption_words()) + "\n")
    work = base / "work"
    train([DEMO, "--work-dir", str(work), "--cfg-options", "train_cfg.max_iters=2", "default_hooks.checkpoint.interval=2",
           "train_dataloader.batch_size=2", f"model.aligner.labeler.word_list={words}",
           "train_cfg.val_interval=2", "train_cfg.val_begin=2"])
    yield dict(base=base, data=base / "data", ckpt=str(work / "iter_2.pth"))
    mp.undo()
