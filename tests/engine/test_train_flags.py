"""``tools/train.py`` flags people type: ``--vis``, ``--no-validate``, ``--amp``, ``--auto-scale-lr``; and
``tools/analyze_logs.py`` on the runs they leave behind."""
from __future__ import annotations

import json
import math
import struct
import time

import pytest
from engine_toy import write_config

from alignkit.cli.analyze_logs import main as analyze_logs
from alignkit.cli.train import build_config, main, parse_args


def _cfg(tmp_path, *flags, **kw):
    config = write_config(tmp_path / "toy.py", **kw)
    return build_config(parse_args([str(config), "--work-dir", str(tmp_path / "w"), *flags]))


def test_vis_tensorboard_writes_events_and_keeps_scalars_json(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_config(tmp_path / "toy.py", max_iters=3, ckpt_interval=3)
    main([str(config), "--work-dir", str(tmp_path / "w"), "--vis", "tensorboard"])
    (scalars,) = (tmp_path / "w").glob("*/vis_data/scalars.json")
    (events,) = scalars.parent.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    logged = [json.loads(line) for line in scalars.read_text().splitlines()]
    # the same loss values, step by step, in both backends
    tb = {e.step: e.value for e in acc.Scalars("loss")}
    assert sorted(tb) == [row["step"] for row in logged] == [1, 2, 3]
    for row in logged:
        assert tb[row["step"]] == pytest.approx(row["loss"], rel=1e-6)


def wandb_records(run_file) -> list:
    """The ``Record`` protobufs of an offline W&B run file (``run-<id>.wandb``), in order.

    Read here: wandb 0.31 ships no Python reader of it. The file is W&B's record log: a 7-byte
    header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each
    ``crc32 (u32) | length (u16) | kind (u8) | bytes`` (kind 1 = a whole record, 2/3/4 =
    first/middle/last piece; a block tail under 7 bytes is padding).
    """
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    block, pos, pieces, records = 32768, 7, [], []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 or pos + 7 + n > len(data):  # zero padding, or a chunk still being written
            break
        pieces = [data[pos + 7:pos + 7 + n]] if kind in (1, 2) else pieces + [data[pos + 7:pos + 7 + n]]
        pos += 7 + n
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record())
            records[-1].ParseFromString(b"".join(pieces))
    return records


def test_vis_wandb_writes_an_offline_run_with_the_loss_scalars(tmp_path, monkeypatch):
    for key, value in dict(WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wandb_dir"), WANDB_SILENT="true",
                           WANDB_CONSOLE="off").items():
        monkeypatch.setenv(key, value)
    config = write_config(tmp_path / "toy.py", max_iters=2, ckpt_interval=2)
    main([str(config), "--work-dir", str(tmp_path / "w"), "--vis", "wandb"])
    (scalars,) = (tmp_path / "w").glob("*/vis_data/scalars.json")
    # mmengine's WandbVisBackend passes dir=<vis_data>/wandb to wandb.init, so the run lands there, not in WANDB_DIR
    (run_file,) = scalars.parent.glob("wandb/offline-run-*/run-*.wandb")
    # wandb.finish() (mmengine's close) returns before W&B's service has written the whole file: wait for the
    # run's closing 'exit' record (here: within a few seconds of training returning).
    deadline = time.monotonic() + 60
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(run_file)):
        assert time.monotonic() < deadline, f"{run_file} has no 'exit' record after 60 s"
        time.sleep(0.2)
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in wandb_records(run_file) if r.WhichOneof("record_type") == "history"]
    logged = [json.loads(line) for line in scalars.read_text().splitlines()]
    assert [row["iter"] for row in history] == [row["step"] for row in logged] == [1, 2]
    for ours, theirs in zip(logged, history):  # the same loss values, step by step, in both backends
        assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-6)
        assert theirs["loss_mse"] == pytest.approx(ours["loss_mse"], rel=1e-6)


def test_vis_wandb_and_tensorboard_together_keep_the_local_backend(tmp_path):
    cfg = _cfg(tmp_path, "--vis", "tensorboard", "wandb")
    assert [b["type"] for b in cfg.visualizer.vis_backends] == ["LocalVisBackend", "TensorboardVisBackend",
                                                                 "WandbVisBackend"]


def test_vis_rejects_an_unknown_backend(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _cfg(tmp_path, "--vis", "nonsense")
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_no_validate_drops_the_validation_loop(tmp_path):
    cfg = _cfg(tmp_path, "--no-validate", max_iters=4, val_interval=1)
    assert cfg.val_cfg is None and cfg.val_dataloader is None and cfg.val_evaluator is None
    runner = main([str(tmp_path / "toy.py"), "--work-dir", str(tmp_path / "w2"), "--no-validate"])
    (scalars,) = (tmp_path / "w2").glob("*/vis_data/scalars.json")
    assert not [line for line in scalars.read_text().splitlines() if "mse_val" in line]
    assert runner.iter == 4


def test_amp_selects_amp_optim_wrapper(tmp_path):
    cfg = _cfg(tmp_path, "--amp")
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"


@pytest.mark.parametrize("world, accumulate", [(1, 1), (4, 1), (1, 2), (8, 4)])
def test_auto_scale_lr_follows_the_real_global_batch(tmp_path, monkeypatch, world, accumulate):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    base = 16
    cfg = _cfg(tmp_path, "--auto-scale-lr", "--cfg-options", f"auto_scale_lr.base_batch_size={base}",
               f"optim_wrapper.accumulative_counts={accumulate}", max_iters=10)
    r = world * 4 * accumulate / base  # the toy's per-device batch is 4
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-2 * r)
    assert cfg.train_cfg.max_iters == math.ceil(10 / r)
    warmup, cosine = cfg.param_scheduler  # written as end=3 (warm-up) and begin=3, end=10
    assert (warmup.end, cosine.begin, cosine.end) == (math.ceil(3 / r), math.ceil(3 / r), math.ceil(10 / r))
    assert cfg.auto_scale_lr.enable is False  # mmengine must not scale a second time


def test_auto_scale_lr_needs_a_base_batch(tmp_path):
    with pytest.raises(ValueError, match="base_batch_size"):
        _cfg(tmp_path, "--auto-scale-lr")


# --------------------------------------------------------------------------- analyze_logs
def _write_run(folder, rows):
    path = folder / "20260101_000000" / "vis_data" / "scalars.json"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_analyze_logs_plots_default_keys_of_two_runs(tmp_path, capsys):
    from PIL import Image

    sea = [{"loss": 3.0 - i * 0.1, "loss_lm": 2.0, "loss_align": 1.0 - i * 0.1, "align_temperature": 1 + i,
            "lr": 1e-3, "step": i + 1} for i in range(5)] + [{"align/label_top1": 0.25, "step": 5}]
    base = [{"loss": 2.5, "loss_lm": 2.5, "lr": 1e-3, "step": i + 1} for i in range(5)]
    _write_run(tmp_path / "sea", sea)
    _write_run(tmp_path / "baseline", base)
    out = tmp_path / "plots" / "curves.png"
    got = analyze_logs([str(tmp_path / "sea"), str(tmp_path / "baseline"), "--out", str(out)])
    assert list(got) == ["sea", "baseline"]
    assert list(got["sea"]) == ["loss", "loss_lm", "loss_align", "align_temperature", "align/label_top1"]
    assert got["sea"]["loss_align"] == ([1, 2, 3, 4, 5], [1.0 - i * 0.1 for i in range(5)])
    assert list(got["baseline"]) == ["loss", "loss_lm"]  # a run plots the keys it logged
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 600
    assert "sea  loss_align: 5 points, step 1..5, 1 -> 0.6" in capsys.readouterr().out


def test_analyze_logs_joins_a_resumed_run_and_names_bad_input(tmp_path):
    _write_run(tmp_path / "w", [{"loss": 1.0, "step": 1}])
    later = tmp_path / "w" / "20260102_000000" / "vis_data" / "scalars.json"
    later.parent.mkdir(parents=True)
    later.write_text(json.dumps({"loss": 0.5, "step": 2}) + "\n")
    got = analyze_logs([str(tmp_path / "w"), "--out", str(tmp_path / "c.png")])
    assert got["w"]["loss"] == ([1, 2], [1.0, 0.5])
    with pytest.raises(ValueError, match=r"--keys \['nope'\].*logged keys: \['loss'\]"):
        analyze_logs([str(tmp_path / "w"), "--keys", "nope", "--out", str(tmp_path / "c.png")])
    later.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"scalars.json:1: not a scalars.json line"):
        analyze_logs([str(tmp_path / "w"), "--out", str(tmp_path / "c.png")])
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        analyze_logs([str(tmp_path / "nowhere")])


def test_analyze_logs_on_a_real_toy_run(tmp_path):
    config = write_config(tmp_path / "toy.py", max_iters=4, ckpt_interval=4, val_interval=2)
    main([str(config), "--work-dir", str(tmp_path / "w")])
    got = analyze_logs([str(tmp_path / "w"), "--keys", "loss", "lr", "--out", str(tmp_path / "toy.png")])
    assert got["w"]["loss"][0] == [1, 2, 3, 4]
    assert (tmp_path / "toy.png").stat().st_size > 0
