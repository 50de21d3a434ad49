"""SkippedSamplesHook: running per-reason totals of the data layer's skips, in the log and across a resume.

A unit test feeds hand-made batches (counts drawn from a seeded generator,
expected totals summed here); an end-to-end test trains the demo on an
annotation file with a missing image, a truncated JPEG and an over-long
caption, resumes it, and reads the counts back from the log and scalars.json.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import DEMO
from mmengine.logging import MessageHub
from PIL import Image

from alignkit.cli.train import main
from alignkit.datasets.constants import SKIP_REASONS
from alignkit.engine.hooks.data_skip_hook import format_counts
from alignkit.registry import HOOKS
from alignkit.testing.demo import write_demo_data



def _runner(name: str, max_iters: int, it: int = 0):
    # The few Runner attributes the hook reads; the hub is mmengine's real MessageHub.
    return SimpleNamespace(message_hub=MessageHub.get_instance(name), iter=it, max_iters=max_iters,
                           train_dataloader=[None] * 1000, hooks=[])


def _scalar(runner, key):
    buf = runner.message_hub.log_scalars.get(f"train/{key}")
    return None if buf is None else int(buf.current())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_totals_follow_the_batches_and_update_only_at_sync_points(seed):
    rng = random.Random(seed)
    reasons = sorted(SKIP_REASONS) + ["error:TypeError", "error:RuntimeError"]  # unexpected exceptions too
    iters, interval = 11, 3
    batches = []
    for _ in range(iters):
        skipped = {r: rng.randint(1, 3) for r in rng.sample(reasons, rng.randint(0, 3))}
        batches.append(dict(data_samples=dict(sample_ids=["x"], skipped=skipped, num_truncated=rng.randint(0, 2))))
    hook = HOOKS.build(dict(type="SkippedSamplesHook", interval=interval))
    runner = _runner(f"skip-unit-{seed}", iters)
    hook.before_train(runner)
    expected: dict[str, int] = {}
    synced: dict[str, int] = {}
    for i, batch in enumerate(batches):
        runner.iter = i
        for r, n in batch["data_samples"]["skipped"].items():
            expected[r] = expected.get(r, 0) + n
        expected["truncated"] = expected.get("truncated", 0) + batch["data_samples"]["num_truncated"]
        hook.after_train_iter(runner, i, batch, None)
        if (i + 1) % interval == 0 or i + 1 == iters:  # the logger interval and the last iteration
            synced = {k: v for k, v in expected.items() if v}
        assert hook.totals == synced
        for r in reasons:
            assert _scalar(runner, f"data_skipped_{r}") == synced.get(r)
        assert _scalar(runner, "data_truncated") == synced.get("truncated")
    assert not any("loss" in k for k in runner.message_hub.log_scalars)

    # Checkpoint round trip: a resumed run (iter > 0) continues the totals, a load_from run (iter 0) does not.
    ckpt: dict = {}
    hook.before_save_checkpoint(runner, ckpt)
    for it, want in ((5, synced), (0, {})):
        fresh = HOOKS.build(dict(type="SkippedSamplesHook"))
        fresh.after_load_checkpoint(runner, json.loads(json.dumps(ckpt)))
        fresh.before_train(_runner(f"skip-unit-{seed}-load{it}", iters, it))
        assert fresh.totals == want


def test_format_counts_orders_by_count_and_reports_nothing_skipped():
    assert format_counts({}) == "no samples skipped"
    assert format_counts({"truncated": 2}) == "no samples skipped; truncated 2 samples"
    assert format_counts({"missing_image": 1, "too_long": 3, "mismatch": 1}) == (
        "skipped 5 samples: too_long 3, mismatch 1, missing_image 1")  # 3 + 1 + 1; ties by name


@pytest.mark.parametrize("samples, match", [
    (dict(skipped={"broken": 1}), "unknown reason 'broken'"),
    (dict(skipped={"too_long": -1}), r"must be an int >= 0, got -1"),
    (dict(skipped=[("too_long", 1)]), "must be a dict"),
    (dict(skipped={}, num_truncated=1.5), r"num_truncated.*got 1.5"),
])
def test_bad_counts_raise_value_error(samples, match):
    hook = HOOKS.build(dict(type="SkippedSamplesHook"))
    with pytest.raises(ValueError, match=match):
        hook.add_batch(dict(data_samples=samples))


def test_bad_interval_raises():
    with pytest.raises(ValueError, match=r"interval \(None: the logger.s\) must be an int >= 1"):
        HOOKS.build(dict(type="SkippedSamplesHook", interval=0))


# --- end to end ---------------------------------------------------------------------------------------------------
# One row of each below. Before the data layer caught every row's exception, the last two
# killed the run: a list as a role is unhashable, and tokenizers raise on a lone surrogate.
BAD = {"missing_image": 1, "unreadable_image": 1, "too_long": 1, "bad_conversation": 1, "bad_text": 1}


def _write_bad_demo(root: Path) -> None:
    """The demo's first 3 rows plus 5 bad ones: 8 rows = 2 batches of 4, so one epoch = 2 iterations."""
    ann = Path(write_demo_data(root))
    rows = json.loads(ann.read_text())[:3]
    jpg = root / "images" / "corrupt.jpg"
    Image.open(root / rows[0]["image"]).convert("RGB").save(jpg, "JPEG")
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])  # a truncated JPEG: opens, fails to decode

    def row(i, image, caption):
        return {"id": f"bad-{i}", "image": image, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."}, {"from": "gpt", "value": caption}]}

    # 300 caption words (>= 1 token each) + 63 extra image positions > max_length 256.
    rows += [row(0, "images/nowhere.png", "a cat"), row(1, "images/corrupt.jpg", "a cat"),
             row(2, rows[0]["image"], " ".join(["a cat"] * 150)), row(3, rows[1]["image"], "a cat"),
             row(4, rows[2]["image"], "a cat \ud800")]
    rows[-2]["conversations"][0]["from"] = ["human"]
    ann.write_text(json.dumps(rows))  # the surrogate is written as the JSON escape \ud800  # write_demo_data keeps an existing annotation file


def _args(work_dir, data_root, *options):
    return [DEMO, "--work-dir", str(work_dir), "--cfg-options", f"train_dataloader.dataset.data_root={data_root}",
            "default_hooks.logger.interval=1", "default_hooks.checkpoint.interval=2", *options]


def test_demo_run_logs_per_reason_counts_and_keeps_them_across_resume(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    data_root = tmp_path / "data"
    _write_bad_demo(data_root)
    work = tmp_path / "work"

    runner = main(_args(work, data_root, "train_cfg.max_iters=2"))  # one epoch: each bad row once
    log = next(Path(runner.log_dir).glob("*.log")).read_text()
    assert ("SkippedSamplesHook: training done, skipped 5 samples: bad_conversation 1, bad_text 1, missing_image 1, "
            "too_long 1, unreadable_image 1") in log
    assert "'bad-4'" in log and "'bad-3'" in log  # each skip is logged with its row id
    for reason in BAD:
        assert f"data_skipped_{reason}: 1" in log
    assert "Iter(train) [2/2]" in log  # it trained to the end

    # Resume to 4 iterations: the second epoch meets each bad row once more, on top of the restored 1.
    runner = main(_args(work, data_root, "train_cfg.max_iters=4") + ["--resume", str(work / "iter_2.pth")])
    log = next(Path(runner.log_dir).glob("*.log")).read_text()
    assert ("skipped 10 samples: bad_conversation 2, bad_text 2, missing_image 2, too_long 2, unreadable_image 2"
            in log)
    last = json.loads(next(Path(runner.log_dir).glob("vis_data/scalars.json")).read_text().splitlines()[-1])
    assert last["iter"] == 4
    assert {k: last[f"data_skipped_{k}"] for k in BAD} == {k: 2 * n for k, n in BAD.items()}


# --- several ranks ------------------------------------------------------------------------------------------------
def _rank_sync(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        hook = HOOKS.build(dict(type="SkippedSamplesHook", interval=1))
        runner = _runner(f"skip-dist-{rank}", 2)
        hook.before_train(runner)
        # Rank 0 meets an unexpected TypeError, rank 1 a RuntimeError and a known reason; only rank 1 has any
        # error in the second interval, so the gather must run on both ranks all the same.
        per_rank = [[{"error:TypeError": 2}, {}], [{"error:RuntimeError": 1, "too_long": 1}, {"error:TypeError": 1}]]
        for i, skipped in enumerate(per_rank[rank]):
            runner.iter = i
            hook.after_train_iter(runner, i, dict(data_samples=dict(skipped=skipped, num_truncated=0)), None)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(hook.totals))
    finally:
        dist.destroy_process_group()


def test_error_reasons_are_summed_over_ranks(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the children reuse this process's imports (spawn would re-import torch and mmengine in each).
    mp.start_processes(_rank_sync, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    expected = {"too_long": 1, "error:RuntimeError": 1, "error:TypeError": 3}  # 2 + 1 over the two ranks
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected
