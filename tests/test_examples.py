"""The plain-PyTorch example (DESIGN.md's use 3) runs, and its alignment loss goes down."""
import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sea_step_plain_pytorch.py"


def test_plain_pytorch_example_runs_and_learns(capsys):
    spec = importlib.util.spec_from_file_location("sea_step_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first = module.main(["--steps", "1", "--seed", "3"])
    last = module.main(["--steps", "60", "--seed", "3"])
    assert last < first  # same seed, same data: 60 steps of training lowered the loss
    assert "pairs" in capsys.readouterr().out
