"""DeepSpeed ZeRO-3 glue: read partitioned parameters whole, know their full shapes.

Under ZeRO-3 each rank keeps 1/N of every parameter (``param.ds_tensor``);
``param`` itself is an empty tensor and its full shape is ``param.ds_shape``.
Parameters are gathered around a module's ``forward`` by DeepSpeed's hooks,
so code that reads one anywhere else must gather it: the word table (from the
LLM's input embedding, once, at build time), the adapter artifact, the logged
temperature, and the vision tower's own parameters that open_clip and timm
read inside ``forward_intermediates`` (not a ``forward``, so no hook fires).

Every helper here is a no-op on ordinary parameters, so the same code runs
with DDP, on one GPU or on a CPU, and never imports deepspeed unless a
parameter is partitioned or ZeRO-3 is enabled. Gathering is collective: every
rank must call it with the same parameters (they do: ranks run the same code).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

__all__ = [
    "full_shape", "full_state_dict", "gathered", "is_partitioned", "register_params_read_outside_forward",
    "zero3_enabled",
]


def is_partitioned(param: torch.Tensor) -> bool:
    """Whether ``param`` is a ZeRO-3 parameter (partitioned across ranks)."""
    return hasattr(param, "ds_id")


def full_shape(param: torch.Tensor) -> torch.Size:
    """The parameter's full shape, also while it is partitioned (then ``param.shape`` is ``(0,)``)."""
    return param.ds_shape if is_partitioned(param) else param.shape


@contextlib.contextmanager
def gathered(params: Iterable[torch.Tensor]) -> Iterator[None]:
    """Inside the block every partitioned parameter of ``params`` is whole (read-only: changes are dropped)."""
    params = [p for p in params if is_partitioned(p)]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def _has_master(param: torch.Tensor) -> bool:
    """A partitioned parameter that ZeRO-3's optimizer holds an fp32 master copy of (a trained one)."""
    return is_partitioned(param) and param.requires_grad and getattr(param, "_z3_optimizer", None) is not None


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with every tensor whole, detached, on the CPU, a copy (collective under ZeRO-3).

    A trained partitioned parameter is read from the optimizer's fp32 master copy
    (``deepspeed.utils.safe_get_full_fp32_param``, cast to the parameter's dtype),
    not through ``gathered``: DeepSpeed's gather skips a parameter its prefetcher
    already marked available, and on CPU ranks such a parameter was seen to hold
    the bytes of another (a vision-tower bias in place of the adapter's last bias,
    in one CI run in three). Other partitioned parameters are gathered.
    """
    params = dict(module.named_parameters())
    masters = {name for name, p in params.items() if _has_master(p)}
    state = {}
    with gathered(p for name, p in params.items() if name not in masters):
        for name, value in module.state_dict(keep_vars=True).items():
            if name in masters:
                from deepspeed.utils import safe_get_full_fp32_param

                value = safe_get_full_fp32_param(params[name]).to(params[name].dtype)
            state[name] = value.detach().to("cpu", copy=True).contiguous()
    return state


def zero3_enabled() -> bool:
    """Whether a ZeRO-3 config is active for model construction (transformers' ``HfDeepSpeedConfig``).

    ``alignkit.engine.compat`` sets it for a config whose strategy is DeepSpeed
    ZeRO-3, so ``from_pretrained``/``from_config`` build the LLM partitioned.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


def register_params_read_outside_forward(owner: nn.Module, module: nn.Module) -> int:
    """Let ZeRO-3 gather ``module``'s own parameters whenever ``owner.forward`` runs; returns how many.

    DeepSpeed gathers a module's direct parameters when that module's
    ``forward`` is called. open_clip's ``VisionTransformer`` and timm's trunk
    read theirs (class token, positional embedding, projection) inside
    ``forward_intermediates`` or directly (``visual.proj``), so no hook fetches
    them. Registering them as external parameters of the module whose
    ``forward`` the caller does call (``owner``) fixes that. Direct parameters
    of ``torch.nn`` layers are left alone: their ``forward`` is always called.
    Does nothing unless ZeRO-3 is enabled.
    """
    if not zero3_enabled():
        return 0
    import deepspeed

    count = 0
    for sub in module.modules():
        if type(sub).__module__.startswith("torch.nn."):
            continue
        for param in sub.parameters(recurse=False):
            deepspeed.zero.register_external_parameter(owner, param)
            count += 1
    return count
