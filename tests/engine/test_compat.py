"""The mmengine compatibility fixes of ``alignkit.engine.compat``, one by one (the runs are in the other files)."""
import collections
import pickle

import numpy as np
import pytest
import torch
from engine_toy import ToyRegressionDataset
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import MessageHub
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from alignkit.engine import compat

on_cpu = pytest.mark.skipif(get_device() != "cpu", reason="checks the CPU-only path")


@pytest.fixture
def loader():
    assert compat.install_checkpoint_loader()
    assert compat.install_checkpoint_loader()  # idempotent
    assert CheckpointLoader._get_checkpoint_loader("/any/local/file.pth") is compat.load_from_local_safe


def test_mmengine_checkpoint_loads_weights_only(tmp_path, loader):
    hub = MessageHub(name="compat-test")
    for step, loss in enumerate([0.5, 0.25, 0.125]):
        hub.update_scalar("train/loss", loss)
        hub.update_info("iter", step)
    checkpoint = dict(
        meta=dict(iter=3, seed=7, dataset_meta=dict(name="x")),
        state_dict=collections.OrderedDict(w=torch.arange(6.0).reshape(2, 3)),
        message_hub=hub.state_dict(),
        numpy=dict(array=np.arange(4, dtype=np.int32), scalar=np.float64(1.5)),
    )
    path = tmp_path / "ckpt.pth"
    torch.save(checkpoint, path)

    loaded = _load_checkpoint(str(path), map_location="cpu")  # mmengine's own entry point
    assert torch.equal(loaded["state_dict"]["w"], checkpoint["state_dict"]["w"])
    values, _counts = loaded["message_hub"]["log_scalars"]["train/loss"].data
    np.testing.assert_array_equal(values, [0.5, 0.25, 0.125])
    assert loaded["message_hub"]["log_scalars"]["train/loss"].mean() == pytest.approx(0.875 / 3)
    np.testing.assert_array_equal(loaded["numpy"]["array"], np.arange(4, dtype=np.int32))
    assert loaded["numpy"]["scalar"] == 1.5 and loaded["meta"]["iter"] == 3


def test_restricted_getattr_is_not_a_general_getattr(tmp_path, loader):
    # Pickle reaches a classmethod through getattr(OrderedDict, 'fromkeys'): the
    # stand-in for builtins.getattr must refuse anything but HistoryBuffer's methods.
    path = tmp_path / "getattr.pth"
    torch.save(dict(f=collections.OrderedDict.fromkeys), path)
    with pytest.raises(pickle.UnpicklingError, match="fromkeys"):
        _load_checkpoint(str(path), map_location="cpu")


def test_unknown_global_is_named_and_can_be_allowed(tmp_path, loader, monkeypatch):
    monkeypatch.setattr(compat, "_extra_globals", [])
    path = tmp_path / "custom.pth"
    torch.save(dict(meta=dict(dataset=ToyRegressionDataset(num_samples=2))), path)
    with pytest.raises(pickle.UnpicklingError, match=r"engine_toy\.ToyRegressionDataset.*allow_checkpoint_globals"):
        _load_checkpoint(str(path), map_location="cpu")

    compat.allow_checkpoint_globals(ToyRegressionDataset)
    loaded = _load_checkpoint(str(path), map_location="cpu")
    assert torch.equal(loaded["meta"]["dataset"].inputs, ToyRegressionDataset(num_samples=2).inputs)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        compat.load_checkpoint_file(str(tmp_path / "nope.pth"))


@on_cpu
def test_cpu_ddp_wrapper_drops_device_ids():
    cfg = Config(dict(launcher="pytorch", find_unused_parameters=True))
    compat.cpu_model_wrapper(cfg)
    assert cfg.model_wrapper_cfg == dict(
        type="MMDistributedDataParallel", broadcast_buffers=False, find_unused_parameters=True, device_ids=None
    )
    # A config's own wrapper keeps its settings and gains device_ids=None only.
    cfg = Config(dict(launcher="pytorch", model_wrapper_cfg=dict(type="MMDistributedDataParallel", static_graph=True)))
    compat.cpu_model_wrapper(cfg)
    assert cfg.model_wrapper_cfg == dict(type="MMDistributedDataParallel", static_graph=True, device_ids=None)
    # FlexibleRunner: the DDP strategy's wrapper.
    cfg = Config(dict(launcher="pytorch", strategy=dict(type="DDPStrategy")))
    compat.cpu_model_wrapper(cfg)
    assert cfg.strategy["model_wrapper"]["device_ids"] is None
    # Not distributed: nothing to change.
    cfg = Config(dict(launcher="none"))
    compat.cpu_model_wrapper(cfg)
    assert "model_wrapper_cfg" not in cfg


@on_cpu
def test_pytorch_launcher_without_torchrun_environment_names_what_is_missing(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match=r"RANK.*torch\.distributed\.run"):
        compat.init_cpu_distributed(Config(dict(launcher="pytorch")))
    assert not compat.init_cpu_distributed(Config(dict(launcher="none")))


def test_deepspeed_strategy_needs_the_deepspeed_optim_wrapper(monkeypatch):
    # Pretend deepspeed is installed: the wrapper check comes after the import check.
    monkeypatch.setattr(compat.importlib.util, "find_spec", lambda name: object())
    cfg = Config(dict(strategy=dict(type="DeepSpeedStrategy"), optim_wrapper=dict(type="AmpOptimWrapper")))
    with pytest.raises(ValueError, match="DeepSpeedOptimWrapper.*'AmpOptimWrapper'"):
        compat.check_deepspeed(cfg)
    cfg.optim_wrapper = dict(type="DeepSpeedOptimWrapper", optimizer=dict(type="AdamW"), clip_grad=dict(max_norm=1))
    with pytest.raises(ValueError, match=r"clip_grad -> strategy\.gradient_clipping"):
        compat.check_deepspeed(cfg)
    cfg.optim_wrapper = dict(type="DeepSpeedOptimWrapper", optimizer=dict(type="AdamW"))
    compat.check_deepspeed(cfg)


def test_zero3_config_keeps_an_hf_deepspeed_config_alive_until_the_next_run():
    pytest.importorskip("deepspeed")
    pytest.importorskip("accelerate")
    from transformers.integrations import deepspeed_config, is_deepspeed_zero3_enabled

    zero3 = Config(dict(strategy=dict(type="DeepSpeedStrategy", zero_optimization=dict(stage=3),
                                      bf16=dict(enabled=True), train_micro_batch_size_per_gpu=2)))
    try:
        assert compat.zero3_model_init(zero3) and is_deepspeed_zero3_enabled()
        # what transformers hands to deepspeed.zero.Init: the strategy's own DeepSpeed config
        assert deepspeed_config()["zero_optimization"] == {"stage": 3} and deepspeed_config()["bf16"]["enabled"]
        zero2 = Config(dict(strategy=dict(type="DeepSpeedStrategy", zero_optimization=dict(stage=2))))
        assert not compat.zero3_model_init(zero2) and not is_deepspeed_zero3_enabled()
        assert compat.zero3_model_init(zero3)
    finally:
        assert not compat.zero3_model_init(Config(dict())) and not is_deepspeed_zero3_enabled()


def test_deepspeed_strategy_calls_the_checkpoint_hooks_before_saving(monkeypatch):
    pytest.importorskip("deepspeed")
    from mmengine._strategy.deepspeed import DeepSpeedStrategy

    saved = []

    def save_checkpoint(self, filename, *, extra_ckpt=None, callback=None, **kwargs):  # mmengine's: ignores callback
        saved.append((filename, dict(extra_ckpt), kwargs))

    monkeypatch.setattr(DeepSpeedStrategy, "save_checkpoint", save_checkpoint)
    assert not compat.deepspeed_checkpoint_hooks(Config(dict(strategy=dict(type="DDPStrategy"))))
    assert compat.deepspeed_checkpoint_hooks(Config(dict(strategy=dict(type="DeepSpeedStrategy"))))
    assert compat.deepspeed_checkpoint_hooks(Config(dict(strategy=dict(type="DeepSpeedStrategy"))))  # idempotent

    def hook(checkpoint):  # FlexibleRunner's callback: the hooks' before_save_checkpoint
        checkpoint["hooked"] = len(saved)

    DeepSpeedStrategy.save_checkpoint(object(), "iter_2.pth", extra_ckpt={"meta": {}}, callback=hook,
                                      save_optimizer=True)
    assert saved == [("iter_2.pth", {"meta": {}, "hooked": 0}, {"save_optimizer": True})]


def test_deepspeed_validation_runs_the_models_eval_mode(monkeypatch):
    pytest.importorskip("deepspeed")
    from mmengine._strategy.deepspeed import MMDeepSpeedEngineWrapper

    # Restored after the test: the patch is process-wide.
    monkeypatch.setattr(MMDeepSpeedEngineWrapper, "val_step", MMDeepSpeedEngineWrapper.val_step)
    monkeypatch.setattr(MMDeepSpeedEngineWrapper, "test_step", MMDeepSpeedEngineWrapper.test_step)
    assert not compat.deepspeed_eval_mode(Config(dict(strategy=dict(type="DDPStrategy"))))
    assert compat.deepspeed_eval_mode(Config(dict(strategy=dict(type="DeepSpeedStrategy"))))
    assert compat.deepspeed_eval_mode(Config(dict(strategy=dict(type="DeepSpeedStrategy"))))  # idempotent

    class Module(torch.nn.Module):  # what the DeepSpeed engine wraps: a model with a preprocessor
        def __init__(self, eval_mode=None):
            super().__init__()
            if eval_mode is not None:
                self.eval_mode = eval_mode
            self.data_preprocessor = lambda data, training: dict(data, preprocessed=not training)

    class Engine(torch.nn.Module):  # the engine's forward is the module's, as DeepSpeedEngine's is
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, **data):
            return data

    for module, mode in ((Module("align"), "align"), (Module(), "predict")):
        wrapper = MMDeepSpeedEngineWrapper(model=Engine(module))
        for step in (wrapper.val_step, wrapper.test_step):
            assert step(dict(x=1)) == dict(x=1, preprocessed=True, mode=mode)
