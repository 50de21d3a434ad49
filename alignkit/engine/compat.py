"""mmengine 0.10 on current torch and on CPU-only machines: every workaround, in one place.

``apply_compat(cfg)`` is what ``alignkit.cli.train.main`` calls on the merged
config before it builds the Runner. Each fix is a function of its own, is a
no-op where it is not needed, and says below why it exists:

1. **Checkpoints under torch >= 2.6** (``install_checkpoint_loader``). torch 2.6
   made ``torch.load(weights_only=True)`` the default; mmengine 0.10 calls
   ``torch.load`` without the argument, and its checkpoints hold the message
   hub's ``HistoryBuffer`` objects and numpy arrays, so ``--resume`` fails with
   an ``UnpicklingError``. We keep ``weights_only=True`` and allow exactly the
   globals an mmengine checkpoint needs, for mmengine's local-file loader only
   (a ``safe_globals`` context around that one call, not a process-wide
   allowlist). ``HistoryBuffer`` pickles its statistics methods through
   ``getattr(HistoryBuffer, 'mean')``, so ``builtins.getattr`` is allowed as a
   restricted stand-in that resolves only those method names on that class; a
   general ``getattr`` would reach ``getattr.__self__`` (the builtins module)
   and make the allowlist pointless. A checkpoint with anything else fails
   with a message that names the global and ``allow_checkpoint_globals``.
   It is the one loader of every ``.pth`` alignkit reads (``load_from``,
   ``--resume``, the tools, the converters). URLs (``load_from='https://...'``)
   go through it too: mmengine's ``http(s)://`` scheme unpickles with
   ``weights_only=False``; ours downloads with torch.hub's downloader into
   torch.hub's cache (``<hub dir>/checkpoints/<file name>``) and loads the file
   weights-only. mmengine's other remote schemes (``openmmlab://``, ``s3://``,
   ...) unpickle without ``weights_only`` and are refused with a hint.
2. **Distributed training on CPUs** (``init_cpu_distributed``,
   ``cpu_model_wrapper``). mmengine's ``pytorch`` launcher calls
   ``torch.cuda.set_device(LOCAL_RANK)`` before ``init_process_group``, which
   fails without CUDA; and its DDP wrapper passes ``device_ids=[LOCAL_RANK]``,
   which DDP rejects for a CPU module. Without an accelerator we initialise
   the process group with gloo ourselves (the Runner skips ``init_dist`` when a
   group exists) and build DDP with ``device_ids=None``.
3. **AmpOptimWrapper on CPU** (``amp_on_cpu``). ``AmpOptimWrapper`` asserts
   that CUDA/NPU/MLU exists. A GPU config with ``AmpOptimWrapper`` is run on
   CPU with a plain ``OptimWrapper`` (logged): bf16 on CPU comes from the
   model's own ``torch.autocast``, not from the optimiser wrapper.
4. **Epoch restarts in iteration-based training** (``warn_epoch_sampler``).
   With ``IterBasedTrainLoop`` and ``DefaultSampler`` mmengine restarts the
   dataloader at every epoch end and sleeps 2 s each time. We warn and point at
   ``InfiniteSampler`` (not silently swapped: the sampler decides data order).
5. **DeepSpeed as an optional extra** (``check_deepspeed``). A config with
   ``strategy=dict(type='DeepSpeedStrategy', ...)`` fails early with an install
   hint when deepspeed is missing, and when ``optim_wrapper`` is not the
   ``DeepSpeedOptimWrapper`` the strategy needs; and when the installed
   deepspeed is 0.19.7 or newer, which removed ``deepspeed.runtime.fp16.onebit``
   that mmengine 0.10's ``DeepSpeedStrategy`` imports when it registers
   optimizers (the ``deepspeed`` extra pins ``deepspeed>=0.14,<=0.19.6``).
6. **ZeRO-3 builds the LLM partitioned** (``zero3_model_init``). mmengine
   builds the whole model on every rank, then ``deepspeed.initialize`` shards
   it, so a 13B LLM would first materialise whole on each rank. transformers
   builds a model partitioned (``deepspeed.zero.Init``, weights loaded one
   module at a time) inside ``from_pretrained``/``from_config`` while an
   ``HfDeepSpeedConfig`` object is alive (it holds only a weak reference to
   it). For a ZeRO-3 strategy we create one from the strategy's DeepSpeed
   config and keep it until the next ``apply_compat``, which drops it for a
   config that is not ZeRO-3 (several runs in one process must not leak it).
   Needs ``accelerate`` (in the ``deepspeed`` extra).
7. **Hooks see DeepSpeed checkpoints** (``deepspeed_checkpoint_hooks``).
   mmengine 0.10's ``DeepSpeedStrategy.save_checkpoint`` ignores the
   ``callback`` through which ``FlexibleRunner`` calls the hooks'
   ``before_save_checkpoint``, so ``AdapterArtifactHook`` and ``RNGStateHook``
   never ran at a checkpoint under DeepSpeed. We call it first, on every rank
   (DeepSpeed saves collectively), with the same ``extra_ckpt`` dict that is
   saved, as mmengine's other strategies do.
8. **Validation under DeepSpeed runs the model's own mode**
   (``deepspeed_eval_mode``). mmengine 0.10's ``MMDeepSpeedEngineWrapper``
   hard-codes ``mode='predict'`` in ``val_step``/``test_step`` instead of
   calling the model's ``val_step``, so ``LLaVAModel``'s alignment metrics
   (``mode='align'``) never ran under a DeepSpeed strategy. The wrapper now
   asks the model for its ``eval_mode`` (``'predict'`` for a model without
   one) and still runs it through the DeepSpeed engine, whose hooks gather
   ZeRO-3 partitions for every submodule's forward.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.metadata
import importlib.util
import logging
import os
import pickle
import urllib.parse

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.utils import digit_version
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "allow_checkpoint_globals",
    "amp_on_cpu",
    "apply_compat",
    "check_deepspeed",
    "cpu_model_wrapper",
    "deepspeed_checkpoint_hooks",
    "deepspeed_eval_mode",
    "init_cpu_distributed",
    "install_checkpoint_loader",
    "load_checkpoint_file",
    "load_checkpoint_url",
    "warn_epoch_sampler",
    "zero3_model_init",
]

# --- 1. checkpoints under torch >= 2.6 ---------------------------------------

# The statistics HistoryBuffer registers by default; a project that registers
# more through ``HistoryBuffer.register_statistics`` is covered by the second
# check in ``_history_buffer_getattr``.
_HISTORY_BUFFER_METHODS = frozenset({"min", "max", "current", "mean"})
_extra_globals: list = []


def _history_buffer_getattr(obj, name):
    """``getattr`` restricted to what a pickled ``HistoryBuffer`` needs: its statistics methods."""
    if obj is HistoryBuffer and isinstance(name, str) and (
        name in _HISTORY_BUFFER_METHODS or name in HistoryBuffer._statistics_methods
    ):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f"checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer's statistics methods "
        f"{sorted(_HISTORY_BUFFER_METHODS)} are allowed"
    )


def _checkpoint_safe_globals() -> list:
    """The globals an mmengine 0.10 checkpoint needs, each under every name it is pickled as."""
    import numpy as np

    # numpy 2 pickles arrays as numpy._core.*, numpy 1 as numpy.core.*; either may
    # have written the checkpoint, whichever numpy reads it.
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    # Unpickling a dtype sets state on an instance of its class (numpy >= 1.25:
    # numpy.dtypes.Float64DType, ...), so those classes must be allowed too.
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes["All"]} - {np.dtype}
    return [
        HistoryBuffer,
        (_history_buffer_getattr, "builtins.getattr"),
        np.ndarray,
        np.dtype,
        *sorted(dtype_classes, key=lambda cls: cls.__name__),
        (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy._core.multiarray.scalar"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        *_extra_globals,
    ]


def allow_checkpoint_globals(*objects) -> None:
    """Allow more globals in checkpoints loaded through mmengine (e.g. a dataset's ``metainfo`` type).

    Each item is a class/function or a ``(object, 'module.qualname')`` pair,
    as for ``torch.serialization.add_safe_globals``. Only for types you trust:
    unpickling calls them.
    """
    _extra_globals.extend(objects)


def _safe_globals_context():
    if hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5: scoped to this load
        return torch.serialization.safe_globals(_checkpoint_safe_globals())
    torch.serialization.add_safe_globals(_checkpoint_safe_globals())  # torch 2.4: process-wide
    return contextlib.nullcontext()


def load_checkpoint_file(filename: str, map_location=None):
    """``torch.load(filename, weights_only=True)`` with mmengine's checkpoint globals allowed.

    ``filename`` may be an ``http(s)://`` URL: it is downloaded first (:func:`load_checkpoint_url`).
    A file holding anything else (a pickled ``__reduce__`` that would run code) is refused with an
    ``UnpicklingError`` naming the file and the globals it asks for; nothing in it runs.
    """
    if str(filename).startswith(URL_PREFIXES):
        return load_checkpoint_url(str(filename), map_location=map_location)
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    try:
        with _safe_globals_context():
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        allowed = set()
        for item in _checkpoint_safe_globals():
            allowed.add(item[1] if isinstance(item, tuple) else f"{item.__module__}.{item.__qualname__}")
        unknown = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(filename)) - allowed)
        raise pickle.UnpicklingError(
            f"{filename} holds objects that a weights_only load refuses: {unknown or 'see below'}. "
            "If you trust this file, allow them with alignkit.engine.allow_checkpoint_globals(...) "
            f"before training. torch said: {err}"
        ) from None


URL_PREFIXES = ("http://", "https://")


def _download(url: str) -> str:
    from torch.hub import download_url_to_file, get_dir

    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f"checkpoint URL {url!r} names no file")
    cached = os.path.join(get_dir(), "checkpoints", name)
    if not os.path.exists(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        print_log(f"downloading {url} to {cached}", logger="current")
        download_url_to_file(url, cached, progress=False)  # to a temp file, moved into place when complete
    return cached


def load_checkpoint_url(url: str, map_location=None):
    """Download ``url`` into torch.hub's cache (rank 0 first, as mmengine does), then :func:`load_checkpoint_file`."""
    rank, world_size = get_dist_info()
    cached = _download(url) if rank == 0 else None
    if world_size > 1:
        torch_dist.barrier()
        if rank > 0:
            cached = _download(url)  # found in the cache, unless this rank is on another node
    return load_checkpoint_file(cached, map_location=map_location)


def load_from_local_safe(filename, map_location):
    """mmengine checkpoint-loader scheme for local files (the name after ``load_from_`` is logged)."""
    return load_checkpoint_file(filename, map_location=map_location)


def load_from_url_safe(filename, map_location):
    """mmengine checkpoint-loader scheme for ``http(s)://``: download, then the weights-only load."""
    return load_checkpoint_url(filename, map_location=map_location)


def load_from_refused_scheme(filename, map_location):
    """mmengine checkpoint-loader scheme for the remote schemes that would unpickle without ``weights_only``."""
    raise ValueError(
        f"checkpoint {filename!r}: alignkit loads checkpoints weights-only from local files and http(s):// URLs; "
        "this scheme would unpickle it without weights_only. Download the file and pass its path"
    )


def install_checkpoint_loader() -> bool:
    """Route every mmengine checkpoint scheme through the weights-only loader; returns True. Idempotent.

    Local files -> ``load_checkpoint_file``; ``http(s)://`` -> download + ``load_checkpoint_file``; every
    other scheme mmengine knows -> refused. ``force=True`` because these schemes are mmengine's own.
    """
    for prefix in list(CheckpointLoader._schemes):
        if prefix == "":
            loader = load_from_local_safe
        elif prefix in URL_PREFIXES:
            loader = load_from_url_safe
        else:
            loader = load_from_refused_scheme
        if CheckpointLoader._schemes[prefix] is not loader:
            CheckpointLoader.register_scheme(prefixes=prefix, loader=loader, force=True)
    return True


# --- 2. distributed training on CPUs -----------------------------------------


def _on_cpu() -> bool:
    # mmengine places the model on get_device(); follow it rather than asking CUDA alone.
    return get_device() == "cpu"


def init_cpu_distributed(cfg: Config) -> bool:
    """Initialise a gloo process group for ``launcher='pytorch'`` on a machine without an accelerator.

    Reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT as ``torch.distributed.run``
    sets them, and ``env_cfg.dist_cfg.timeout`` (seconds) if given. Returns
    whether it initialised a group.
    """
    if cfg.get("launcher", "none") != "pytorch" or not _on_cpu() or torch_dist.is_initialized():
        return False
    missing = [key for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if key not in os.environ]
    if missing:
        raise ValueError(
            f"launcher='pytorch' needs the environment variables {missing}; start the job with "
            "`python -m torch.distributed.run --nproc_per_node N tools/train.py CONFIG --launcher pytorch`"
        )
    dist_cfg = dict((cfg.get("env_cfg") or {}).get("dist_cfg") or {})
    backend = dist_cfg.pop("backend", "gloo")
    if backend != "gloo":
        print_log(f"no accelerator: using the gloo backend instead of {backend!r}", logger="current")
    timeout = dist_cfg.pop("timeout", None)
    if timeout is not None:
        dist_cfg["timeout"] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend="gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]), **dist_cfg
    )
    return True


def _cpu_ddp(wrapper: dict | None, find_unused_parameters: bool) -> dict:
    from mmengine.registry import MODEL_WRAPPERS

    if wrapper is None:
        # What mmengine builds by default, minus the device ids.
        return dict(
            type="MMDistributedDataParallel",
            broadcast_buffers=False,
            find_unused_parameters=find_unused_parameters,
            device_ids=None,
        )
    wrapper = dict(wrapper)
    wrapper_type = wrapper.setdefault("type", "MMDistributedDataParallel")
    wrapper_cls = MODEL_WRAPPERS.get(wrapper_type) if isinstance(wrapper_type, str) else wrapper_type
    if isinstance(wrapper_cls, type) and issubclass(wrapper_cls, DistributedDataParallel):
        wrapper.setdefault("device_ids", None)
    return wrapper


def cpu_model_wrapper(cfg: Config) -> None:
    """On CPU, build DDP with ``device_ids=None`` (mmengine passes ``[LOCAL_RANK]``, a GPU index)."""
    if cfg.get("launcher", "none") == "none" or not _on_cpu():
        return
    find_unused = cfg.get("find_unused_parameters", False)
    strategy = cfg.get("strategy")
    if strategy is not None or cfg.get("runner_type") == "FlexibleRunner":
        strategy = dict(strategy or dict(type="DDPStrategy"))
        if strategy.get("type") == "DDPStrategy":
            strategy["model_wrapper"] = _cpu_ddp(strategy.get("model_wrapper"), find_unused)
            cfg.strategy = strategy
        return
    cfg.model_wrapper_cfg = _cpu_ddp(cfg.get("model_wrapper_cfg"), find_unused)


# --- 3. AmpOptimWrapper on CPU ------------------------------------------------


def amp_on_cpu(cfg: Config) -> None:
    """Replace ``AmpOptimWrapper`` by ``OptimWrapper`` on CPU, where mmengine refuses it."""
    wrapper = cfg.get("optim_wrapper")
    if not _on_cpu() or not isinstance(wrapper, dict) or wrapper.get("type") != "AmpOptimWrapper":
        return
    dropped = {key: wrapper.pop(key) for key in ("dtype", "loss_scale", "use_fsdp") if key in wrapper}
    wrapper["type"] = "OptimWrapper"
    print_log(
        f"no accelerator: AmpOptimWrapper replaced by OptimWrapper (dropped {dropped}); "
        "bf16 on CPU comes from the model's own torch.autocast",
        logger="current",
        level=logging.WARNING,
    )


# --- 4. epoch restarts in iteration-based training ---------------------------


def warn_epoch_sampler(cfg: Config) -> None:
    """Warn when an iteration-based loop reads through ``DefaultSampler`` (2 s sleep per epoch end)."""
    train_cfg = cfg.get("train_cfg") or {}
    loader = cfg.get("train_dataloader") or {}
    sampler = (loader.get("sampler") or {}).get("type") if isinstance(loader, dict) else None
    iter_based = train_cfg.get("type") == "IterBasedTrainLoop" or train_cfg.get("by_epoch") is False
    if iter_based and sampler == "DefaultSampler":
        print_log(
            "IterBasedTrainLoop with DefaultSampler restarts the dataloader (and sleeps 2 s) at every "
            "epoch end; use train_dataloader.sampler=dict(type='InfiniteSampler', shuffle=True)",
            logger="current",
            level=logging.WARNING,
        )


# --- 5. DeepSpeed as an optional extra ---------------------------------------


def _strategy_type(cfg: Config):
    strategy = cfg.get("strategy")
    if not isinstance(strategy, dict):
        return None
    strategy_type = strategy.get("type")
    return strategy_type if isinstance(strategy_type, str) else getattr(strategy_type, "__name__", None)


def check_deepspeed(cfg: Config) -> None:
    """Fail early and clearly when a config asks for DeepSpeed that cannot run."""
    if _strategy_type(cfg) != "DeepSpeedStrategy":
        return
    if importlib.util.find_spec("deepspeed") is None:
        raise ImportError(
            "the config sets strategy=dict(type='DeepSpeedStrategy', ...) but deepspeed is not installed; "
            "install the extra with `pip install 'alignkit[deepspeed]'` (or `pip install 'deepspeed>=0.14'`), "
            "or drop the strategy to train with DDP"
        )
    _check_deepspeed_version()
    wrapper = cfg.get("optim_wrapper") or {}
    if wrapper.get("type") != "DeepSpeedOptimWrapper":
        raise ValueError(
            f"DeepSpeedStrategy needs optim_wrapper.type='DeepSpeedOptimWrapper', got {wrapper.get('type')!r}; "
            "precision and clipping go in the strategy (bf16=dict(enabled=True), gradient_clipping=...)"
        )
    # DeepSpeed does these itself; DeepSpeedOptimWrapper takes only the optimizer.
    moved = dict(clip_grad="gradient_clipping", accumulative_counts="gradient_accumulation_steps", dtype="bf16/fp16")
    stray = sorted(set(wrapper) - {"type", "optimizer", "constructor", "paramwise_cfg"})
    if stray:
        hints = ", ".join(f"{key} -> strategy.{moved[key]}" if key in moved else key for key in stray)
        raise ValueError(
            f"optim_wrapper keys {stray} do not apply under DeepSpeedStrategy ({hints}); "
            "replace the wrapper with optim_wrapper = dict(_delete_=True, type='DeepSpeedOptimWrapper', optimizer=...)"
        )


# mmengine 0.10.7 imports deepspeed.runtime.fp16.onebit (OnebitAdam, ...), removed in deepspeed 0.19.7.
_DEEPSPEED_MAX = "0.19.6"


def _check_deepspeed_version() -> None:
    try:
        version = importlib.metadata.version("deepspeed")
    except importlib.metadata.PackageNotFoundError:  # importable without metadata (a source checkout)
        return
    if digit_version(version) > digit_version(_DEEPSPEED_MAX) and importlib.util.find_spec(
        "deepspeed.runtime.fp16.onebit"
    ) is None:
        raise ImportError(
            f"deepspeed {version} removed deepspeed.runtime.fp16.onebit, which mmengine's DeepSpeedStrategy imports; "
            f"install deepspeed<={_DEEPSPEED_MAX} (`pip install 'alignkit[deepspeed]'` pins it)"
        )


# --- 6. ZeRO-3 builds the LLM partitioned ------------------------------------

_hf_deepspeed_config = None  # the live HfDeepSpeedConfig (transformers keeps only a weak reference)


def deepspeed_config(strategy: dict) -> dict:
    """The DeepSpeed config dict that mmengine's ``DeepSpeedStrategy`` will pass to ``deepspeed.initialize``."""
    base = strategy.get("config")
    if isinstance(base, str):
        import json

        with open(base, encoding="utf-8") as f:
            base = json.load(f)
    config = dict(base or {})
    for key in ("zero_optimization", "gradient_clipping", "fp16", "bf16", "amp", "activation_checkpointing", "aio",
                "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        if strategy.get(key) is not None:
            config[key] = strategy[key]
    config.setdefault("gradient_accumulation_steps", 1)
    return config


def zero3_model_init(cfg: Config) -> bool:
    """Keep an ``HfDeepSpeedConfig`` alive for a ZeRO-3 strategy (drop it otherwise); returns whether one is set."""
    global _hf_deepspeed_config
    zero3 = False
    if _strategy_type(cfg) == "DeepSpeedStrategy":
        config = deepspeed_config(cfg.strategy)
        zero3 = int((config.get("zero_optimization") or {}).get("stage", 0)) == 3
    if _hf_deepspeed_config is not None or zero3:
        from transformers.integrations import deepspeed as hf_deepspeed

        hf_deepspeed.unset_hf_deepspeed_config()
        _hf_deepspeed_config = None
        if zero3:
            if importlib.util.find_spec("accelerate") is None:
                raise ImportError(
                    "ZeRO-3 builds the LLM partitioned through transformers' HfDeepSpeedConfig, which needs "
                    "accelerate: `pip install 'alignkit[deepspeed]'` (or `pip install accelerate`)"
                )
            _hf_deepspeed_config = hf_deepspeed.HfDeepSpeedConfig(_plain(config))
    return zero3


def _plain(obj):
    """mmengine ConfigDicts -> plain dicts/lists (DeepSpeed copies and serialises its config)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --- 7. hooks see DeepSpeed checkpoints --------------------------------------


def deepspeed_checkpoint_hooks(cfg: Config) -> bool:
    """Make ``DeepSpeedStrategy.save_checkpoint`` call its ``callback`` (the hooks); idempotent."""
    if _strategy_type(cfg) != "DeepSpeedStrategy":
        return False
    from mmengine._strategy.deepspeed import DeepSpeedStrategy

    original = DeepSpeedStrategy.save_checkpoint
    if getattr(original, "__alignkit_calls_callback__", False):
        return True

    @functools.wraps(original)
    def save_checkpoint(self, filename, *, extra_ckpt=None, callback=None, **kwargs):
        extra_ckpt = dict() if extra_ckpt is None else extra_ckpt
        if callback is not None:
            callback(extra_ckpt)
        return original(self, filename, extra_ckpt=extra_ckpt, callback=None, **kwargs)

    save_checkpoint.__alignkit_calls_callback__ = True
    DeepSpeedStrategy.save_checkpoint = save_checkpoint
    return True


# --- 8. validation under DeepSpeed runs the model's own mode ------------------


def deepspeed_eval_mode(cfg: Config) -> bool:
    """Make ``MMDeepSpeedEngineWrapper.val_step``/``test_step`` use the model's ``eval_mode``; idempotent."""
    if _strategy_type(cfg) != "DeepSpeedStrategy":
        return False
    from mmengine._strategy.deepspeed import MMDeepSpeedEngineWrapper

    if getattr(MMDeepSpeedEngineWrapper.val_step, "__alignkit_eval_mode__", False):
        return True

    def eval_step(self, data):
        data = self.model.module.data_preprocessor(data, False)
        data = self._cast_inputs_half(data)
        return self._run_forward(data, mode=getattr(self.model.module, "eval_mode", "predict"))

    eval_step.__alignkit_eval_mode__ = True
    MMDeepSpeedEngineWrapper.val_step = eval_step
    MMDeepSpeedEngineWrapper.test_step = eval_step
    return True


# --- all of them --------------------------------------------------------------


def apply_compat(cfg: Config) -> Config:
    """Apply every fix above to ``cfg`` (in place; also returned). Call before building the Runner."""
    install_checkpoint_loader()
    check_deepspeed(cfg)
    zero3_model_init(cfg)
    deepspeed_checkpoint_hooks(cfg)
    deepspeed_eval_mode(cfg)
    init_cpu_distributed(cfg)
    cpu_model_wrapper(cfg)
    amp_on_cpu(cfg)
    warn_epoch_sampler(cfg)
    return cfg
