"""Build the Hugging Face LLM and its tokenizer from plain config dicts.

The LLM config (``LLaVAModel(llm=...)``)::

    llm = dict(
        pretrained='lmsys/vicuna-7b-v1.5',   # hub name or local folder; None = random weights from `config`;
                                             # dict(type=...) = a FUNCTIONS entry returning the folder
        config=dict(model_type='llama', hidden_size=4096, ...),  # the model's key dims (see below)
        dtype='bfloat16',                     # weights dtype (None = the checkpoint's / fp32)
        attn_implementation=None,             # e.g. 'sdpa', 'flash_attention_2'
    )

``config`` is written in the project's base configs for each paper LLM, so the
model's shape is known without any download:

- ``pretrained=None``: the LLM is created with random weights from ``config``
  (tests, the demo); ``vocab_size=None`` in it means ``len(tokenizer)``.
- ``init_empty=True`` (``LLaVAModel(init_empty=True)``): created from
  ``config`` on the ``meta`` device — no weights, no memory, no network — to
  check a config's shapes (``tests/configs``). Asking ``transformers.AutoConfig``
  for a hub name would be a network call; the dims in the config are not.
- otherwise ``AutoModelForCausalLM.from_pretrained(pretrained)``; the given
  ``config`` dims are then checked against the loaded model's, so a config
  that states the wrong width fails at once instead of at the first step.

The tokenizer config (``LLaVAModel(tokenizer=...)``, the same one the dataset
uses) is read by ``alignkit.datasets.tokenizers.build_tokenizer``.
"""
from __future__ import annotations

import torch

from alignkit.utils.validate import as_dtype
from alignkit.registry import FUNCTIONS

# config keys compared with a loaded model's config (when the config states them)
_CHECKED_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "model_type")


def _dtype_kw(dtype) -> dict:
    # transformers < 4.56 names the argument torch_dtype (and rejects dtype); alignkit's export runs there too
    import transformers

    old = tuple(int(x) for x in transformers.__version__.split(".")[:2]) < (4, 56)
    return {"torch_dtype" if old else "dtype": dtype}


def _hf_config(config: dict, tokenizer):
    from transformers import AutoConfig

    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"llm.config must name its model_type (e.g. 'llama'), got keys {sorted(config)}")
    if config.get("vocab_size", 0) is None:
        if tokenizer is None:
            raise ValueError("llm.config.vocab_size=None means len(tokenizer), but no tokenizer was given")
        config["vocab_size"] = len(tokenizer)
    if tokenizer is not None:
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            config.setdefault(key, getattr(tokenizer, key, None))
    return AutoConfig.for_model(model_type, **config)


def build_llm(cfg: dict, tokenizer=None, init_empty: bool = False, seed: int | None = None):
    """The causal LM described by ``cfg`` (module docstring). Returns a ``PreTrainedModel``."""
    from transformers import AutoModelForCausalLM

    if not isinstance(cfg, dict):
        raise ValueError(f"llm must be a dict(pretrained=..., config=..., dtype=...), got {type(cfg).__name__}")
    cfg = dict(cfg)
    unknown = set(cfg) - {"pretrained", "config", "dtype", "attn_implementation", "kwargs"}
    if unknown:
        raise ValueError(
            f"llm has unknown keys {sorted(unknown)}; expected pretrained, config, dtype, attn_implementation, kwargs"
        )
    pretrained, config = cfg.get("pretrained"), cfg.get("config")
    dtype = as_dtype("llm.dtype", cfg.get("dtype"))
    extra = dict(cfg.get("kwargs") or {})
    if cfg.get("attn_implementation"):
        extra["attn_implementation"] = cfg["attn_implementation"]

    if init_empty or pretrained is None:
        if config is None:
            what = "init_empty=True" if init_empty else "llm.pretrained=None"
            raise ValueError(f"{what} needs llm.config (the model's dims, e.g. dict(model_type='llama', ...))")
        hf_config = _hf_config(config, tokenizer)
        if init_empty:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(hf_config, **_dtype_kw(dtype), **extra)
        else:
            if seed is None:
                model = AutoModelForCausalLM.from_config(hf_config, **_dtype_kw(dtype), **extra)
            else:
                with torch.random.fork_rng(devices=[]):  # random weights that do not depend on the caller's RNG
                    torch.manual_seed(seed)
                    model = AutoModelForCausalLM.from_config(hf_config, **_dtype_kw(dtype), **extra)
        return model

    if isinstance(pretrained, dict):  # e.g. dict(type='smollm2_path'): a local asset found at run time

        pretrained = FUNCTIONS.build(pretrained)
    model = AutoModelForCausalLM.from_pretrained(pretrained, **_dtype_kw(dtype), **extra)
    if config:
        got = model.config.to_dict()
        wrong = {k: (config[k], got.get(k)) for k in _CHECKED_KEYS if config.get(k) is not None and config[k] != got.get(k)}
        if wrong:
            raise ValueError(
                f"llm.config disagrees with the model loaded from {pretrained!r}: "
                + ", ".join(f"{k}: config says {a!r}, model has {b!r}" for k, (a, b) in wrong.items())
            )
    return model
