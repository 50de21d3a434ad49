"""An alignkit ``LLaVAModel`` as a Hugging Face ``LlavaForConditionalGeneration`` (weights, config, processor).

The pieces map one to one:

    open_clip VisionTransformer  ──► CLIPVisionModel        (``clip_vision_state_dict``)
    MLPAdapter (mlp2x_gelu)      ──► multi_modal_projector   linear_1 / GELU / linear_2
    the causal LM                ──► language_model + lm_head (its own state dict)

open_clip → CLIP key mapping: ``conv1`` → ``embeddings.patch_embedding`` (no
bias in either), ``class_embedding``, ``positional_embedding`` →
``embeddings.position_embedding.weight``, ``ln_pre`` → ``pre_layrnorm``, block
i: ``ln_1``/``ln_2`` → ``layer_norm1``/``layer_norm2``, the fused
``attn.in_proj_weight``/``bias`` split in three → ``self_attn.{q,k,v}_proj``,
``attn.out_proj`` → ``self_attn.out_proj``, ``mlp.c_fc``/``c_proj`` →
``mlp.fc1``/``fc2``; ``ln_post`` → ``post_layernorm`` (unused at layer −2).
The activation is ``quick_gelu`` when the tower's blocks use open_clip's
``QuickGELU`` (OpenAI weights), ``gelu`` for ``nn.GELU``. SigLIP towers
(open_clip over a timm ViT with an attention-pool head) map to
``SiglipVisionModel`` (``siglip_vision_state_dict``), with
``vision_feature_select_strategy='full'`` (no CLS token to drop). Layer scale,
no ``ln_pre``, prefix tokens in a timm trunk or non-square inputs raise ``ValueError``.

Image token: HF LLaVA marks image positions with one token id repeated P times
(``image_token_id``), where alignkit uses one ``IMAGE_TOKEN_INDEX`` (−200)
placeholder expanded at splice time. ``<image>`` is added to the tokenizer
when it lacks it; if its id falls outside the embedding matrix, the embedding
gets the mean row and ``lm_head`` a zero row, and the generation config
suppresses the token so it is never generated. Its embedding row is never
read (the visual tokens replace it), so logits at the real vocabulary's
columns equal alignkit's.

Prompt equality: alignkit tokenizes the text on each side of ``<image>`` on
its own (LLaVA's ``tokenizer_image_token``); HF tokenizes the whole prompt
with ``<image>`` as an added token. The exported ``tokenizer.json`` carries
rules that give training's ids on the whole prompt: for alignkit's
``SentencePieceTokenizer`` (Vicuna) SentencePiece's own dummy prefix and
whitespace words, ``legacy`` True or False (transformers' Llama conversion
differs on runs and leading spaces and after special tokens); for a
``Metaspace(prepend_scheme='first')`` tokenizer the prefix on each stretch
between images. ``check_prompt_ids`` verifies the result at every export on
a battery of prompts (``prompt_battery``: spaces, special tokens' text,
unicode, multi-turn), for the model's template.

Versions: the folder loads unchanged in transformers 4.45 to 5.x (weight
names, config spellings, tokenizer class: see ``write_llava``), and this
module runs under each of them.
"""
from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from alignkit.datasets import LLaVADataset
from alignkit.datasets.constants import IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from alignkit.datasets.image_processor import OpenCLIPImageProcessor
from alignkit.datasets.templates import ChatTemplate, PlainTemplate, get_template, tokenize_with_image
from alignkit.datasets.tokenizers import SentencePieceTokenizer
from alignkit.registry import TRANSFORMS
from alignkit.towers.open_clip import _is_open_clip_vit
from alignkit.utils.validate import as_pair
from alignkit.towers import transformers as hf_tower

__all__ = [
    "ExportedLlava",
    "build_llava",
    "chat_template_for",
    "check_prompt_ids",
    "clip_vision_config",
    "clip_vision_state_dict",
    "siglip_vision_config",
    "siglip_vision_state_dict",
    "vision_tower_export",
    "expand_image_placeholders",
    "generation_prompt",
    "hf_tokenizer",
    "image_processor_config",
    "image_processor_of",
    "portable_config",
    "projector_state_dict",
    "prompt_battery",
    "template_of",
    "tokenizer_config",
    "write_llava",
    "write_tokenizer",
]


# --------------------------------------------------------------------------- what the model trained with
def template_of(cfg, override: str | None = None):
    """The conversation template the model was trained with: ``override``, else the training dataset's."""
    if override:
        return get_template(override)
    dataset = (cfg.get("train_dataloader") or {}).get("dataset") or {}
    if "template" in dataset:
        return get_template(dataset["template"])
    # LLaVADataset's default (the demo's dataset keeps it)
    return get_template(inspect.signature(LLaVADataset.__init__).parameters["template"].default)


def image_processor_of(cfg, model):
    """The training data's image processor (built), else the vision encoder's open_clip preprocessing."""
    dataset = (cfg.get("train_dataloader") or {}).get("dataset") or {}
    proc = dataset.get("image_processor")
    if isinstance(proc, dict):
        return TRANSFORMS.build(proc)
    if proc is not None:
        return proc
    enc = model.vision_encoder
    pre = enc.preprocess_cfg
    return OpenCLIPImageProcessor(image_size=enc.image_size, mean=pre.get("mean"), std=pre.get("std"),
                                  resize_mode=pre.get("resize_mode"), interpolation=pre.get("interpolation"))


# --------------------------------------------------------------------------- vision tower
def _check_clip_tower(visual) -> None:
    from open_clip.transformer import ResidualAttentionBlock

    if not _is_open_clip_vit(visual):
        raise ValueError(
            f"vision tower {type(visual).__name__} cannot be exported to Hugging Face LLaVA: open_clip CLIP ViTs "
            "(VisionTransformer) map to CLIPVisionModel and open_clip timm ViTs with an attention-pool head (SigLIP) "
            "to SiglipVisionModel; this is neither"
        )
    if isinstance(visual.ln_pre, nn.Identity):
        raise ValueError("vision tower has no ln_pre (no_ln_pre=True); CLIPVisionModel always applies pre_layrnorm")
    h, w = as_pair("image_size", visual.image_size)
    ph, pw = as_pair("patch_size", visual.patch_size)
    if h != w or ph != pw:
        raise ValueError(f"vision tower takes {h}x{w} images in {ph}x{pw} patches; CLIPVisionModel needs squares")
    for i, block in enumerate(visual.transformer.resblocks):
        if type(block) is not ResidualAttentionBlock or not isinstance(block.attn, nn.MultiheadAttention):
            raise ValueError(f"vision block {i} is {type(block).__name__}; only plain ResidualAttentionBlocks map to CLIP")
        if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
            raise ValueError(f"vision block {i} has layer scale (ls_init_value); CLIPVisionModel has none")
        if getattr(block, "ln_attn", nn.Identity()).__class__ is not nn.Identity:
            raise ValueError(f"vision block {i} has an inner attention norm; CLIPVisionModel has none")


def _hidden_act(visual) -> str:
    from open_clip.transformer import QuickGELU

    act = visual.transformer.resblocks[0].mlp.gelu
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    raise ValueError(f"vision MLP activation {act!r} has no CLIPVisionConfig.hidden_act equivalent")


def clip_vision_config(visual):
    """``CLIPVisionConfig`` with the open_clip tower's shape (ValueError for towers that do not map)."""
    from transformers import CLIPVisionConfig

    _check_clip_tower(visual)
    block = visual.transformer.resblocks[0]
    size, patch = as_pair("image_size", visual.image_size)[0], as_pair("patch_size", visual.patch_size)[0]
    return CLIPVisionConfig(
        hidden_size=int(visual.transformer.width),
        intermediate_size=int(block.mlp.c_fc.out_features),
        num_hidden_layers=len(visual.transformer.resblocks),
        num_attention_heads=int(block.attn.num_heads),
        image_size=int(size),
        patch_size=int(patch),
        num_channels=3,
        projection_dim=int(visual.proj.shape[1]) if visual.proj is not None else int(visual.transformer.width),
        hidden_act=_hidden_act(visual),
        layer_norm_eps=float(block.ln_1.eps),
    )


def clip_vision_state_dict(visual) -> dict[str, Tensor]:
    """The open_clip tower's weights under ``CLIPVisionModel``'s own keys (module docstring)."""
    _check_clip_tower(visual)
    src = {k: v.detach() for k, v in visual.state_dict().items()}
    out = {
        "embeddings.class_embedding": src["class_embedding"],
        "embeddings.patch_embedding.weight": src["conv1.weight"],
        "embeddings.position_embedding.weight": src["positional_embedding"],
        "pre_layrnorm.weight": src["ln_pre.weight"],
        "pre_layrnorm.bias": src["ln_pre.bias"],
        "post_layernorm.weight": src["ln_post.weight"],
        "post_layernorm.bias": src["ln_post.bias"],
    }
    renames = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
               "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(len(visual.transformer.resblocks)):
        a, b = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for old, new in renames.items():
            for p in ("weight", "bias"):
                out[f"{b}{new}.{p}"] = src[f"{a}{old}.{p}"]
        # nn.MultiheadAttention stacks q, k, v along dim 0: (3D, D) and (3D,)
        for p, t in (("weight", src[f"{a}attn.in_proj_weight"]), ("bias", src[f"{a}attn.in_proj_bias"])):
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                out[f"{b}self_attn.{name}.{p}"] = chunk
    return out


# --------------------------------------------------------------------------- SigLIP (open_clip's timm trunk)
# timm VisionTransformer -> SiglipVisionModel: patch_embed.proj -> embeddings.patch_embedding (with bias),
# pos_embed (1, P, D) -> embeddings.position_embedding.weight (P, D), block i: norm1/norm2 ->
# layer_norm1/layer_norm2, the fused attn.qkv split in three -> self_attn.{q,k,v}_proj, attn.proj ->
# self_attn.out_proj, mlp.fc1/fc2 as they are; norm -> post_layernorm; the attention-pool head
# (AttentionPoolLatent): latent -> head.probe, q and kv stacked -> head.attention.in_proj (q, k, v rows),
# proj -> head.attention.out_proj, norm -> head.layernorm, mlp as it is.
def _timm_trunk(visual):
    from open_clip.timm_model import TimmModel

    trunk = getattr(visual, "trunk", None) if isinstance(visual, TimmModel) else None
    if trunk is None or not hasattr(trunk, "blocks") or getattr(trunk, "attn_pool", None) is None:
        return None
    return trunk


def _check_siglip_trunk(trunk) -> None:
    if int(getattr(trunk, "num_prefix_tokens", 0)) != 0 or getattr(trunk, "no_embed_class", False):
        raise ValueError("timm trunk has prefix (class/register) tokens; SiglipVisionModel has none")
    if trunk.pos_embed is None or getattr(trunk, "dynamic_img_size", False):
        raise ValueError("timm trunk has no fixed position embedding; SiglipVisionModel needs one")
    for name in ("norm_pre", "fc_norm", "head"):
        if not isinstance(getattr(trunk, name, nn.Identity()), nn.Identity):
            raise ValueError(f"timm trunk has a {name}; SiglipVisionModel has none")
    if not isinstance(getattr(trunk.patch_embed, "norm", nn.Identity()), nn.Identity):
        raise ValueError("timm trunk normalises its patch embedding; SiglipVisionModel does not")
    h, w = as_pair("image_size", trunk.patch_embed.img_size)
    ph, pw = as_pair("patch_size", trunk.patch_embed.patch_size)
    if h != w or ph != pw:
        raise ValueError(f"vision tower takes {h}x{w} images in {ph}x{pw} patches; SiglipVisionModel needs squares")
    pool = trunk.attn_pool
    if int(getattr(pool, "latent_len", 1)) != 1 or pool.num_heads != trunk.blocks[0].attn.num_heads:
        raise ValueError("attention-pool head with several latents or its own head count; SiglipVisionModel's head "
                         "has one probe and the tower's head count")
    for i, block in enumerate(trunk.blocks):
        extra = [n for n in ("ls1", "ls2", "attn.q_norm", "attn.k_norm", "attn.norm")
                 if not isinstance(_get(block, n), (nn.Identity, type(None)))]
        if extra or getattr(block.attn, "qkv", None) is None:
            raise ValueError(f"vision block {i} has {extra or 'no fused qkv'}; SiglipVisionModel's blocks have none")


def _get(module, dotted):
    for part in dotted.split("."):
        module = getattr(module, part, None)
    return module


def _act_name(act) -> str:
    name = type(act).__name__
    if name == "GELUTanh" or (isinstance(act, nn.GELU) and act.approximate == "tanh"):
        return "gelu_pytorch_tanh"
    if isinstance(act, nn.GELU) and act.approximate == "none" or name == "GELU":
        return "gelu"
    if name == "QuickGELU":
        return "quick_gelu"
    raise ValueError(f"vision MLP activation {act!r} has no SiglipVisionConfig.hidden_act equivalent")


def siglip_vision_config(visual):
    """``SiglipVisionConfig`` with the open_clip timm tower's shape (ValueError for towers that do not map)."""
    from transformers import SiglipVisionConfig

    trunk = _timm_trunk(visual)
    if trunk is None:
        raise ValueError(f"vision tower {type(visual).__name__} is not an open_clip timm ViT with an attention-pool head")
    _check_siglip_trunk(trunk)
    block = trunk.blocks[0]
    return SiglipVisionConfig(
        hidden_size=int(trunk.embed_dim), intermediate_size=int(block.mlp.fc1.out_features),
        num_hidden_layers=len(trunk.blocks), num_attention_heads=int(block.attn.num_heads), num_channels=3,
        image_size=int(as_pair("image_size", trunk.patch_embed.img_size)[0]), patch_size=int(as_pair("patch_size", trunk.patch_embed.patch_size)[0]),
        hidden_act=_act_name(block.mlp.act), layer_norm_eps=float(block.norm1.eps),
    )


def siglip_vision_state_dict(visual) -> dict[str, Tensor]:
    """The timm SigLIP trunk's weights under ``SiglipVisionModel``'s own keys (section comment above)."""
    trunk = _timm_trunk(visual)
    if trunk is None:
        raise ValueError(f"vision tower {type(visual).__name__} is not an open_clip timm ViT with an attention-pool head")
    _check_siglip_trunk(trunk)
    src = {k: v.detach() for k, v in trunk.state_dict().items()}
    out = {
        "embeddings.patch_embedding.weight": src["patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": src["patch_embed.proj.bias"],
        "embeddings.position_embedding.weight": src["pos_embed"][0],
        "post_layernorm.weight": src["norm.weight"],
        "post_layernorm.bias": src["norm.bias"],
    }
    renames = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
               "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(len(trunk.blocks)):
        a, b = f"blocks.{i}.", f"encoder.layers.{i}."
        for old, new in renames.items():
            for p in ("weight", "bias"):
                out[f"{b}{new}.{p}"] = src[f"{a}{old}.{p}"]
        for p in ("weight", "bias"):  # timm's qkv stacks q, k, v along dim 0
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), src[f"{a}attn.qkv.{p}"].chunk(3, dim=0)):
                out[f"{b}self_attn.{name}.{p}"] = chunk
    out["head.probe"] = src["attn_pool.latent"]
    for p in ("weight", "bias"):
        out[f"head.attention.in_proj_{p}"] = torch.cat([src[f"attn_pool.q.{p}"], src[f"attn_pool.kv.{p}"]])
        out[f"head.attention.out_proj.{p}"] = src[f"attn_pool.proj.{p}"]
        out[f"head.layernorm.{p}"] = src[f"attn_pool.norm.{p}"]
        out[f"head.mlp.fc1.{p}"] = src[f"attn_pool.mlp.fc1.{p}"]
        out[f"head.mlp.fc2.{p}"] = src[f"attn_pool.mlp.fc2.{p}"]
    return out


def vision_tower_export(visual):
    """``(vision config, state dict, prefix tokens)`` of a tower that maps: an open_clip CLIP ViT (one CLS
    token) or an open_clip timm SigLIP ViT (none), or a transformers CLIP / SigLIP tower (``HFVisionEncoder``:
    already LLaVA's classes, its own config and weights); ValueError naming the tower otherwise."""

    if hf_tower.is_transformers_tower(visual):
        cfg = hf_tower.vision_config(visual)
        return type(cfg)(**cfg.to_dict()), dict(hf_tower.vision_core(visual).state_dict()), \
            hf_tower.num_prefix_tokens(visual)
    if _timm_trunk(visual) is not None:
        return siglip_vision_config(visual), siglip_vision_state_dict(visual), 0
    return clip_vision_config(visual), clip_vision_state_dict(visual), 1


def vision_feature_layer(feature_layer: int, num_blocks: int) -> int:
    """HF's ``vision_feature_layer`` (an index into ``hidden_states``, which has the embeddings first) for
    alignkit's ``feature_layer`` (an index into the blocks): block b's output is ``hidden_states[b + 1]``."""
    b = feature_layer % num_blocks
    return b - num_blocks  # = (b + 1) - (num_blocks + 1), negative like LLaVA's -2


# --------------------------------------------------------------------------- projector
def projector_state_dict(adapter: nn.Module) -> dict[str, Tensor]:
    """The adapter as ``LlavaMultiModalProjector`` weights (``linear_1``/``linear_2``); mlp2x_gelu only."""
    kind = getattr(adapter, "llava_projector_type", None)
    if kind != "mlp2x_gelu":
        raise ValueError(
            f"adapter {type(adapter).__name__} (LLaVA projector type {kind!r}) cannot be exported: Hugging Face "
            "LLaVA's projector is Linear -> GELU -> Linear with hidden width = llm_dim (mlp2x_gelu)"
        )
    llava = adapter.to_llava_state_dict()  # '0.weight', '0.bias', '2.weight', '2.bias'
    names = {"0": "linear_1", "2": "linear_2"}
    return {f"{names[k.split('.')[0]]}.{k.split('.', 1)[1]}": v.detach() for k, v in llava.items()}


# --------------------------------------------------------------------------- tokenizer and prompts
def hf_tokenizer(tokenizer, add_bos: bool | None = None):
    """A Hugging Face fast tokenizer equal to ``tokenizer`` (a copy), with ``<image>`` added as a special token.

    ``add_bos`` (the template's): whether ``add_special_tokens=True`` (what ``LlavaProcessor`` uses) puts
    BOS first; None keeps the tokenizer's own post-processor.

    An alignkit ``SentencePieceTokenizer`` is converted with transformers'
    ``LlamaTokenizer`` (same ``legacy`` rule, BOS/EOS settings and special
    tokens); the result is checked by ``check_prompt_ids`` at export.
    """
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    if isinstance(tokenizer, SentencePieceTokenizer):
        import transformers

        # 5.x: LlamaTokenizer is the Rust one; 4.x: LlamaTokenizerFast (LlamaTokenizer is SentencePiece itself)
        cls = transformers.LlamaTokenizerFast if transformers.__version__.startswith("4.") else transformers.LlamaTokenizer
        out = cls.from_pretrained(
            str(_sp_folder(tokenizer)), legacy=tokenizer.legacy, add_bos_token=tokenizer.add_bos_token,
            add_eos_token=tokenizer.add_eos_token, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
            unk_token=tokenizer.unk_token, pad_token=tokenizer.pad_token,
        )
    elif isinstance(tokenizer, PreTrainedTokenizerFast):
        out = copy.deepcopy(tokenizer)
    else:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} cannot be exported; expected a transformers fast tokenizer "
            "or alignkit's SentencePieceTokenizer"
        )
    if IMAGE_TOKEN not in out.get_vocab():
        out.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    spec = json.loads(out.backend_tokenizer.to_str())
    if isinstance(tokenizer, SentencePieceTokenizer):
        spec = _sentencepiece_pipeline(spec, tokenizer.legacy)
    elif (spec.get("pre_tokenizer") or {}).get("type") == "Metaspace" and spec["pre_tokenizer"].get("prepend_scheme") == "first":
        spec = _metaspace_first_pipeline(spec)
    out._tokenizer = Tokenizer.from_str(json.dumps(spec))
    if add_bos is not None:
        _set_bos(out, add_bos)
    return out


def _set_bos(tok, add_bos: bool) -> None:
    from tokenizers import processors

    backend = tok.backend_tokenizer
    bare, full = backend.encode("x", add_special_tokens=False).ids, backend.encode("x", add_special_tokens=True).ids
    bos, bos_id = getattr(tok, "bos_token", None), getattr(tok, "bos_token_id", None)
    has_bos = len(full) == len(bare) + 1 and full[0] == bos_id and full[1:] == bare
    if add_bos and not has_bos:
        if bos is None or bos_id is None:
            raise ValueError(f"the template starts with BOS but tokenizer {type(tok).__name__} has no bos_token")
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(str(bos), int(bos_id))])
    elif not add_bos and full != bare:
        backend.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])


# Tokenization rules. alignkit tokenizes each stretch between ``<image>`` on its own (``tokenize_with_image``);
# the exported tokenizer sees the whole prompt. tokenizers splits the text at added tokens whose
# ``normalized`` flag is False *before* normalizing, and at the others after, so: ``<image>`` is
# normalized=False (each stretch is normalized, hence prefixed, on its own, as in training) and the model's
# special tokens follow the training rule (module docstring of ``alignkit.datasets.tokenizers``).
_SP_WORDS = "▁?[^▁]+|▁+(?=▁[^▁])|▁+"  # SentencePiece's words: a run of spaces gives its last one to the next word


def _set_normalized(spec: dict, normalized: bool) -> None:
    for token in spec.get("added_tokens", []):
        token["normalized"] = normalized and token["content"] != IMAGE_TOKEN


def _regex_escape(text: str) -> str:
    # Oniguruma (tokenizers' regex engine) reads \< and \> as word boundaries: escape metacharacters only
    return "".join("\\" + c if c in "\\.^$|?*+()[]{}" else c for c in text)


def _prefix_rule(spec: dict, rep: str, unless: str) -> dict:
    """A normalizer that puts ``rep`` before a stretch unless it starts with a character of ``unless``.

    Nor before a stretch that starts with an added token: training's tokenizers put no prefix before a
    special token, and normalized added tokens are themselves normalized before they are matched (a plain
    ``Prepend`` would turn ``</s>`` into ``▁</s>``).
    """
    tokens = "|".join(_regex_escape(t["content"]) for t in spec.get("added_tokens", []))
    keep = f"(?!{tokens})" if tokens else ""
    first = f"[^{_regex_escape(unless)}]" if unless else "[\\s\\S]"
    return {"type": "Replace", "pattern": {"Regex": f"\\A{keep}(?={first})"}, "content": rep}


def _sentencepiece_pipeline(spec: dict, legacy: bool) -> dict:
    """SentencePiece (Llama) as tokenizers rules: the dummy prefix ``▁`` on every stretch between special tokens
    (``legacy=True``) or only at the start of each ``<image>``-separated stretch (``legacy=False``), spaces
    to ``▁``, and SentencePiece's whitespace words (``"a   b"`` -> ``▁a ▁▁ ▁b``; transformers' own Llama
    conversion gives ``▁a ▁▁▁ b``, and no extra prefix before a leading space)."""
    spec = copy.deepcopy(spec)
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        _prefix_rule(spec, "▁", ""), {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    spec["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": _SP_WORDS}, "behavior": "Isolated", "invert": False}
    _set_normalized(spec, not legacy)  # legacy: split at special tokens first, so every stretch gets the prefix
    return spec


def _metaspace_first_pipeline(spec: dict) -> dict:
    """A ``Metaspace(prepend_scheme='first')`` tokenizer whose prefix goes on each ``<image>``-separated stretch
    (as training tokenizes them one by one), not after its other special tokens: the prefix moves into the
    normalizer (unless the stretch starts with a space, Metaspace's own rule) and every special token but
    ``<image>`` is matched after normalizing."""
    spec = copy.deepcopy(spec)
    pre = spec["pre_tokenizer"]
    rep = pre.get("replacement", "▁")
    steps = [spec["normalizer"]] if spec.get("normalizer") else []
    steps.append(_prefix_rule(spec, rep, " " + rep))
    spec["normalizer"] = {"type": "Sequence", "normalizers": steps}
    spec["pre_tokenizer"] = dict(pre, prepend_scheme="never")
    _set_normalized(spec, True)
    return spec


def _sp_folder(tokenizer):
    import os
    import shutil
    import tempfile
    from pathlib import Path

    # AutoTokenizer wants a folder named tokenizer.model; the alignkit tokenizer may point at any .model file.
    src = Path(tokenizer.model_file)
    if src.name == "tokenizer.model":
        return src.parent
    tmp = Path(tempfile.mkdtemp(prefix="alignkit_sp_"))
    shutil.copyfile(src, tmp / "tokenizer.model")
    os.chmod(tmp, 0o700)
    return tmp


def generation_prompt(template, question: str, has_image: bool = True) -> str:
    """The prompt text the template gives a one-turn conversation up to where the answer starts.

    The template renders the conversation with a stand-in answer; everything before the
    answer's first supervised segment is the prompt (``"<image>"`` for ``plain``,
    ``"SYSTEM USER: <image>\\nQ ASSISTANT:"`` for ``vicuna_v1``).
    """
    template = get_template(template)
    human = (IMAGE_TOKEN + "\n" + question) if has_image else question
    segments = template.render([{"from": "human", "value": human}, {"from": "gpt", "value": "x"}], has_image)
    last = max(i for i, s in enumerate(segments) if s.train)
    return "".join(s.text for s in segments[:last])


def expand_image_placeholders(input_ids: Tensor, image_token_id: int, num_tokens: int) -> Tensor:
    """One row of alignkit ids (with ``IMAGE_TOKEN_INDEX``) -> HF LLaVA ids (``image_token_id`` × P)."""
    ids = input_ids.tolist()
    out: list[int] = []
    for t in ids:
        out.extend([image_token_id] * num_tokens if t == IMAGE_TOKEN_INDEX else [t])
    return torch.tensor(out, dtype=torch.long)


# Texts a user may send that tokenizers treat differently: runs of spaces, leading and trailing spaces, the
# special tokens' own text, tabs and newlines, non-ASCII text. Every template's special tokens are added
# to them by ``prompt_battery``.
BATTERY_TEXTS = (
    "What is in the image?",
    "  two leading spaces",
    "runs   of    spaces",
    "tab\tand\nnewlines\n\n",
    "a literal </s> in the text",
    "</s>USER: starts with an end of sequence",
    "<s> and <unk> written out",
    "unicode: Ünïcödé — 日本語 😀 «quotes» ‘x’",
    "trailing space ",
    "ends with </s>",
)


def prompt_battery(template) -> list[str]:
    """Texts whose token ids training and the export must agree on, for ``template``: each battery text as a
    one-turn question (the generation prompt), two-turn conversations with the answers (the whole
    training sequence), and a three-turn prompt; for ``plain``, each as a caption."""
    template = get_template(template)
    texts = list(BATTERY_TEXTS) + [f"say {end} and go on" for end in template.turn_ends]
    out = []
    if isinstance(template, PlainTemplate):  # one image, one caption
        for text in texts:
            out.append("".join(seg.text for seg in template.render(
                [{"from": "human", "value": IMAGE_TOKEN}, {"from": "gpt", "value": text}], True)))
        return list(dict.fromkeys(out))
    for text in texts:
        out.append(generation_prompt(template, text))
        conv = [{"from": "human", "value": IMAGE_TOKEN + "\n" + text}, {"from": "gpt", "value": text},
                {"from": "human", "value": "And then?"}, {"from": "gpt", "value": " An  answer."}]
        out.append("".join(seg.text for seg in template.render(conv, True)))
    conv = [{"from": "human", "value": IMAGE_TOKEN + "\nWhat is it?"}, {"from": "gpt", "value": "A cat."},
            {"from": "human", "value": "Its colour?"}, {"from": "gpt", "value": "x"}]
    segments = template.render(conv, True)
    last = max(i for i, seg in enumerate(segments) if seg.train)
    out.append("".join(seg.text for seg in segments[:last]))
    return list(dict.fromkeys(out))


def check_prompt_ids(tokenizer, exported, template, num_tokens: int, prompts=None) -> int:
    """ValueError unless the exported tokenizer gives alignkit's training ids on every prompt of
    ``prompt_battery(template)`` (or ``prompts``); returns how many were checked.

    The exported tokenizer gets the prompt with ``<image>`` repeated P times (what ``LlavaProcessor``
    makes of it); alignkit's ids have the placeholder expanded to P image-token ids.
    """
    template = get_template(template)
    prompts = prompt_battery(template) if prompts is None else list(prompts)
    image_id = exported.convert_tokens_to_ids(IMAGE_TOKEN)
    bad = []
    for prompt in prompts:
        ours = tokenize_with_image(tokenizer, prompt, template.add_bos)
        want = expand_image_placeholders(torch.tensor(ours, dtype=torch.long), image_id, num_tokens).tolist()
        got = exported(prompt.replace(IMAGE_TOKEN, IMAGE_TOKEN * num_tokens))["input_ids"]
        if got != want:
            bad.append((prompt, got, want))
    if bad:
        prompt, got, want = bad[0]
        i = next((k for k, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
        raise ValueError(
            f"the exported tokenizer does not reproduce the {template.name!r} prompt ids on {len(bad)} of "
            f"{len(prompts)} prompts; first: {prompt!r}, first difference at token {i} (exported {got[i:i + 4]}, "
            f"alignkit {want[i:i + 4]}); the exported model would see other token ids than it was trained on"
        )
    return len(prompts)


def _jinja_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def chat_template_for(template) -> str:
    """A Jinja chat template that renders HF chat messages as the alignkit template renders a conversation.

    Messages' content may be a string (``"<image>\\nQ"``, as lmms-eval sends) or a
    list of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts. The
    image goes to the front of its user turn as ``"<image>\\n" + text.strip()``
    (``normalise_conversation``); a leading ``system`` message replaces the system prompt.
    """
    template = get_template(template)
    content = (
        "{%- set ns = namespace(text='', image=false) -%}"
        "{%- if m['content'] is string -%}{%- set ns.text = m['content'] -%}"
        "{%- else -%}{%- for p in m['content'] -%}"
        "{%- if p['type'] == 'image' -%}{%- set ns.image = true -%}"
        "{%- elif p['type'] == 'text' -%}{%- set ns.text = ns.text + p['text'] -%}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        f"{{%- if {_jinja_str(IMAGE_TOKEN)} in ns.text -%}}{{%- set ns.image = true -%}}"
        f"{{%- set ns.text = ns.text.replace({_jinja_str(IMAGE_TOKEN)}, '') -%}}{{%- endif -%}}"
    )
    if isinstance(template, PlainTemplate):
        return (
            "{%- for m in messages -%}" + content
            + f"{{%- if m['role'] == 'user' -%}}{{%- if ns.image -%}}{{{{ {_jinja_str(IMAGE_TOKEN)} }}}}{{%- endif -%}}"
            + f"{{%- elif m['role'] == 'assistant' -%}}{{{{ ns.text }}}}{{{{ {_jinja_str(template.sep)} }}}}"
            + "{%- endif -%}{%- endfor -%}"
        )
    if not isinstance(template, ChatTemplate):
        raise ValueError(f"no chat template for {type(template).__name__}; expected plain or a ChatTemplate")
    u, a = template.user, template.assistant
    strip = ".strip()" if template.strip_content else ""
    system = ""
    if template.system_format is not None:
        prefix, _, suffix = template.system_format.partition("{system}")
        default = _jinja_str(template.system or "")
        system = (
            f"{{%- set sys = {default} -%}}"
            "{%- if messages and messages[0]['role'] == 'system' -%}{%- set sys = messages[0]['content'] -%}{%- endif -%}"
            f"{{%- if sys -%}}{{{{ {_jinja_str(prefix)} + sys + {_jinja_str(suffix)} }}}}{{%- endif -%}}"
        )
    image_first = f"{{%- set body = ({_jinja_str(IMAGE_TOKEN + chr(10))} + ns.text.strip()).strip() if ns.image else ns.text{strip} -%}}"
    return (
        system
        + "{%- for m in messages -%}{%- if m['role'] != 'system' -%}" + content + image_first
        + f"{{%- if m['role'] == 'user' -%}}{{{{ {_jinja_str(u.header)} + {_jinja_str(u.content_prefix)} + body"
        + f" + {_jinja_str(u.end)} + {_jinja_str(u.after)} }}}}"
        + f"{{%- else -%}}{{{{ {_jinja_str(a.header)} + {_jinja_str(a.content_prefix)} + body + {_jinja_str(a.end)}"
        + f" + {_jinja_str(a.after)} }}}}{{%- endif -%}}"
        + "{%- endif -%}{%- endfor -%}"
        + f"{{%- if add_generation_prompt -%}}{{{{ {_jinja_str(a.header)} }}}}{{%- endif -%}}"
    )


def image_processor_config(processor) -> dict:
    """``preprocessor_config.json`` for alignkit's ``OpenCLIPImageProcessor``: CLIP's image processor, or LLaVA's
    when it pads (``pad_to_square`` -> ``LlavaImageProcessor(do_pad=True)``, mean-colour padding like LLaVA's
    ``expand2square``; that class exists from transformers 4.49 on, see ``docs/evaluation.md``).

    Same steps: shortest side to the input size, centre crop, rescale, normalise.
    Resampling implementations differ, so pixels agree to a few 1e-2, not bit for bit.
    """
    h, w = processor.image_size
    resample = {"bicubic": 3, "bilinear": 2}[processor.interpolation]  # PIL.Image.Resampling values
    if processor.resize_mode == "squash" and not processor.pad_to_square:  # SigLIP: resize to the square, no crop
        return dict(image_processor_type="SiglipImageProcessor", processor_class="LlavaProcessor", do_resize=True,
                    size={"height": int(h), "width": int(w)}, resample=resample, do_rescale=True,
                    rescale_factor=1 / 255, do_normalize=True, image_mean=[float(m) for m in processor.mean],
                    image_std=[float(s) for s in processor.std], do_convert_rgb=True)
    if processor.resize_mode != "shortest":
        raise ValueError(
            f"image resize_mode {processor.resize_mode!r} has no transformers image processor equivalent; "
            "'shortest' (CLIP) and 'squash' (SigLIP) export"
        )
    if h != w:
        raise ValueError(f"image size {h}x{w}: CLIPImageProcessor's shortest-edge resize needs a square input")
    out = dict(
        image_processor_type="LlavaImageProcessor" if processor.pad_to_square else "CLIPImageProcessor",
        processor_class="LlavaProcessor", do_resize=True, size={"shortest_edge": int(h)}, resample=resample,
        do_center_crop=True, crop_size={"height": int(h), "width": int(w)}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=[float(m) for m in processor.mean], image_std=[float(s) for s in processor.std],
        do_convert_rgb=True,
    )
    if processor.pad_to_square:
        out["do_pad"] = True
    return out


# --------------------------------------------------------------------------- the model
# The weight names of the released llava-hf checkpoints (transformers 4.45's own module names). transformers
# 4.52+ nests the three parts under ``model.`` and 5.x drops CLIPVisionModel's ``vision_model.``; both rename
# these names when loading (``_checkpoint_conversion_mapping`` in 4.x, ``conversion_mapping.py`` in 5.x), so
# a folder written with them loads unchanged, with no unused or newly initialised weight, in 4.45 to 5.x.
# (transformers 5's own save_pretrained writes ``vision_tower.embeddings...``: 4.x cannot load that.)
VISION_PREFIX = "vision_tower.vision_model."
PROJECTOR_PREFIX = "multi_modal_projector."
LLM_PREFIX = "language_model."  # + the causal LM's own names: model.layers..., lm_head.weight


@dataclass
class ExportedLlava:
    """What ``build_llava`` assembles; ``write_llava`` writes it as a folder that transformers 4 and 5 load."""

    state: dict[str, Tensor]  # the weights under the llava-hf names (VISION_PREFIX, PROJECTOR_PREFIX, LLM_PREFIX)
    config: dict  # config.json
    generation_config: dict | None  # generation_config.json
    tokenizer: object  # a fast tokenizer with <image> (tokenizer.json)
    image_processor: dict  # preprocessor_config.json
    processor: dict  # processor_config.json
    chat_template: str
    image_token_id: int
    added_rows: int  # embedding rows added for <image> (0 when the matrix already had room)


def portable_text_config(text: dict) -> dict:
    """The LLM's config dict with both rope spellings: 5.x's ``rope_parameters`` and 4.x's ``rope_theta`` +
    ``rope_scaling`` (each version reads its own and ignores the other's)."""
    text = copy.deepcopy(text)
    rope = text.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        text.setdefault("rope_theta", rope["rope_theta"])
        text.setdefault("rope_scaling", None if scaling.get("rope_type", "default") == "default" else scaling)
    elif "rope_theta" in text:
        scaling = dict(text.get("rope_scaling") or {"rope_type": "default"})
        scaling.setdefault("rope_type", scaling.pop("type", "default"))
        text["rope_parameters"] = {"rope_theta": text["rope_theta"], **scaling}
    return text


def portable_config(config: dict, dtype: torch.dtype) -> dict:
    """``LlavaConfig.to_dict()`` of any version as a dict that 4.45, 4.57 and 5.x read alike."""
    out = copy.deepcopy(config)
    out["text_config"] = portable_text_config(out["text_config"])
    name = str(dtype).replace("torch.", "")
    out["torch_dtype"] = out["dtype"] = name  # 4.x reads torch_dtype, 5.x dtype
    out["text_config"]["torch_dtype"] = out["text_config"]["dtype"] = name
    if "image_token_id" in out:  # 4.x names it image_token_index; 5.x reads both
        out["image_token_index"] = out.pop("image_token_id")
    out.pop("transformers_version", None)
    return out


def _named(module: nn.Module, tensor: Tensor) -> str:
    return next(k for k, v in module.named_parameters(remove_duplicate=False) if v is tensor)


def build_llava(model, image_processor, template, dtype: torch.dtype | None = None) -> ExportedLlava:
    """Assemble the weights, config, tokenizer and processor of a Hugging Face LLaVA from an alignkit ``LLaVAModel``.

    Args:
        model: a ``LLaVAModel`` with real weights (CLIP tower, mlp2x_gelu adapter, HF causal LM, tokenizer).
        image_processor: the ``OpenCLIPImageProcessor`` the model was trained with.
        template: the conversation template (name or object) prompts are written in.
        dtype: weights dtype of the export; None keeps the LLM's.
    """
    from transformers import LlavaConfig

    visual = model.vision_encoder.tower
    vision_cfg, vision_state, prefix_tokens = vision_tower_export(visual)
    if model.adapter.vision_dim != vision_cfg.hidden_size:  # S² concatenates scales: D = n · width
        raise ValueError(
            f"the adapter reads D={model.adapter.vision_dim} features but the vision tower is {vision_cfg.hidden_size} "
            f"wide: {type(model.vision_encoder).__name__} is not one plain tower forward (S² concatenates its "
            "scales), which Hugging Face LlavaForConditionalGeneration cannot express"
        )
    strategy = "default" if prefix_tokens else "full"  # "default" drops CLIP's CLS token; SigLIP has none
    proj_state = projector_state_dict(model.adapter)
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; the export needs it (LLaVAModel(tokenizer=...))")

    template = get_template(template)
    tok = hf_tokenizer(model.tokenizer, template.add_bos)
    p = model.num_visual_tokens
    check_prompt_ids(model.tokenizer, tok, template, p)

    llm = model.llm
    dtype = dtype or next(llm.parameters()).dtype
    emb = llm.get_input_embeddings().weight
    head = llm.get_output_embeddings()
    if head is None:
        raise ValueError(f"LLM {type(llm).__name__} has no output embeddings (lm_head) to export")
    tied = head.weight is emb
    # The head's key from its module: when tied, a look-up by tensor would find the embedding's name first.
    embed_key = _named(llm, emb)
    head_key = next(f"{name}.weight" for name, module in llm.named_modules() if module is head)
    text_state = {k: v.detach() for k, v in llm.state_dict().items()}
    if tied:
        del text_state[head_key]  # transformers ties it again on load
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    rows = emb.shape[0]
    added = max(0, image_id + 1 - rows)
    if added:
        e = text_state[embed_key]
        text_state[embed_key] = torch.cat([e, e.float().mean(0, keepdim=True).to(e.dtype).expand(added, -1)])
        if not tied:
            h = text_state[head_key]
            text_state[head_key] = torch.cat([h, h.new_zeros(added, h.shape[1])])
    text_cfg = copy.deepcopy(llm.config)
    text_cfg.vocab_size = rows + added

    config = LlavaConfig(
        vision_config=vision_cfg,
        text_config=text_cfg,
        image_token_index=image_id,
        image_seq_length=p,
        projector_hidden_act="gelu",
        vision_feature_select_strategy=strategy,
        vision_feature_layer=vision_feature_layer(model.vision_encoder.feature_layer, vision_cfg.num_hidden_layers),
        multimodal_projector_bias=True,
        tie_word_embeddings=tied,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    # The LLM's tensors keep their storage when the dtype already matches (no copy of a 7B model); the vision
    # and projector ones are cloned: q/k/v are views into one open_clip tensor, which safetensors refuses.
    state = {f"{VISION_PREFIX}{k}": v.to(dtype).clone() for k, v in vision_state.items()}
    state.update({f"{PROJECTOR_PREFIX}{k}": v.to(dtype).clone() for k, v in proj_state.items()})
    state.update({f"{LLM_PREFIX}{k}": v.to(dtype) for k, v in text_state.items()})

    gen = None
    if getattr(llm, "generation_config", None) is not None:
        g = copy.deepcopy(llm.generation_config)
        if added:
            g.suppress_tokens = sorted(set(g.suppress_tokens or []) | {image_id})
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tok, key, None) is not None:
                setattr(g, key, getattr(tok, key))
        gen = json.loads(g.to_json_string(use_diff=True))
        gen.pop("transformers_version", None)

    chat = chat_template_for(template)
    # P image tokens: patches + prefix tokens, minus the CLS token that "default" drops again
    processor = dict(processor_class="LlavaProcessor", image_token=IMAGE_TOKEN, patch_size=int(vision_cfg.patch_size),
                     vision_feature_select_strategy=strategy, num_additional_image_tokens=prefix_tokens)
    return ExportedLlava(state, portable_config(config.to_dict(), dtype), gen, tok,
                         image_processor_config(image_processor), processor, chat, image_id, added)


def tokenizer_config(tokenizer, chat_template: str | None = None) -> dict:
    """``tokenizer_config.json``: ``PreTrainedTokenizerFast`` over ``tokenizer.json`` as it is, a class every
    transformers 4.x and 5.x has (5.x's own ``TokenizersBackend`` is unknown to 4.x; ``LlamaTokenizer*``
    would rebuild the pipeline from the vocabulary in 5.x and re-apply legacy rules)."""
    out = {"tokenizer_class": "PreTrainedTokenizerFast", "processor_class": "LlavaProcessor",
           "clean_up_tokenization_spaces": False, "padding_side": getattr(tokenizer, "padding_side", "right")}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = getattr(tokenizer, key, None)
        if value is not None:
            out[key] = str(value)
    length = getattr(tokenizer, "model_max_length", None)
    if isinstance(length, int) and length < 10**9:
        out["model_max_length"] = length
    if chat_template is not None:
        out["chat_template"] = chat_template
    return out


def write_tokenizer(tokenizer, out_dir, chat_template: str | None = None) -> None:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` of an exported tokenizer
    (``hf_tokenizer``), loadable by ``AutoTokenizer`` in transformers 4.45 to 5.x."""
    from pathlib import Path

    out = Path(out_dir)
    (out / "tokenizer.json").write_text(tokenizer.backend_tokenizer.to_str(pretty=True), encoding="utf-8")
    config = tokenizer_config(tokenizer, chat_template)
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", {k: v for k, v in config.items() if k.endswith("_token")})


def _write_json(path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def write_llava(exported: ExportedLlava, out_dir, max_shard_size: int | str = "5GB") -> None:
    """Write ``exported`` into the existing folder ``out_dir``: what ``LlavaForConditionalGeneration`` and
    ``AutoProcessor.from_pretrained`` read, in transformers 4.45 to 5.x alike.

    ``model*.safetensors`` (+ index when sharded) under the llava-hf names, ``config.json`` (both rope
    spellings), ``generation_config.json``, ``tokenizer.json`` + ``tokenizer_config.json`` (with the chat
    template), ``special_tokens_map.json``, ``preprocessor_config.json``, ``processor_config.json`` and
    ``chat_template.json`` (the processor's, in the file name every version reads).
    """
    from pathlib import Path

    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    out = Path(out_dir)
    state = exported.state
    split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: state[k].contiguous() for k in keys}, str(out / filename), metadata={"format": "pt"})
    if split.is_sharded:
        _write_json(out / "model.safetensors.index.json", {"metadata": split.metadata,
                                                           "weight_map": split.tensor_to_filename})
    _write_json(out / "config.json", exported.config)
    if exported.generation_config is not None:
        _write_json(out / "generation_config.json", exported.generation_config)
    write_tokenizer(exported.tokenizer, out, exported.chat_template)
    _write_json(out / "preprocessor_config.json", exported.image_processor)
    _write_json(out / "processor_config.json", exported.processor)
    _write_json(out / "chat_template.json", {"chat_template": exported.chat_template})
