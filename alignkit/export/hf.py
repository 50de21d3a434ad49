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
``QuickGELU`` (OpenAI weights), ``gelu`` for ``nn.GELU``. Only plain CLIP ViTs
map: SigLIP (a timm trunk), layer scale, no ``ln_pre`` or non-square inputs
raise ``ValueError``.

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
with ``<image>`` as an added token. For a SentencePiece-style (Metaspace)
tokenizer that prepends ``▁`` only to the first piece of a text
(``prepend_scheme='first'``) the two differ right after the image, so the
exported tokenizer uses ``prepend_scheme='always'`` (transformers' own
``legacy=True`` rule: every stretch between added tokens gets the ``▁``).
``check_prompt_ids`` verifies the result on the template's own prompt.
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

__all__ = [
    "ExportedLlava",
    "build_llava",
    "chat_template_for",
    "check_prompt_ids",
    "clip_vision_config",
    "clip_vision_state_dict",
    "expand_image_placeholders",
    "generation_prompt",
    "hf_image_processor",
    "hf_tokenizer",
    "image_processor_of",
    "projector_state_dict",
    "template_of",
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
def _pair(x) -> tuple[int, int]:
    return (int(x), int(x)) if isinstance(x, int) else (int(x[0]), int(x[1]))


def _check_clip_tower(visual) -> None:
    from open_clip.transformer import ResidualAttentionBlock

    if not _is_open_clip_vit(visual):
        raise ValueError(
            f"vision tower {type(visual).__name__} cannot be exported to Hugging Face LLaVA yet: only open_clip CLIP "
            "ViTs (VisionTransformer) map to CLIPVisionModel; SigLIP (timm trunk) export is not supported yet"
        )
    if isinstance(visual.ln_pre, nn.Identity):
        raise ValueError("vision tower has no ln_pre (no_ln_pre=True); CLIPVisionModel always applies pre_layrnorm")
    h, w = _pair(visual.image_size)
    ph, pw = _pair(visual.patch_size)
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
    size, patch = _pair(visual.image_size)[0], _pair(visual.patch_size)[0]
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
def hf_tokenizer(tokenizer):
    """A Hugging Face fast tokenizer equal to ``tokenizer`` (a copy), with ``<image>`` added as a special token.

    An alignkit ``SentencePieceTokenizer`` is converted with transformers'
    ``LlamaTokenizer`` (same ``legacy`` rule, BOS/EOS settings and special
    tokens); the result is checked by ``check_prompt_ids`` at export.
    """
    from tokenizers import AddedToken, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if isinstance(tokenizer, SentencePieceTokenizer):
        from transformers import LlamaTokenizer

        out = LlamaTokenizer.from_pretrained(
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
    pre = out.backend_tokenizer.pre_tokenizer
    if isinstance(pre, pre_tokenizers.Metaspace) and pre.prepend_scheme == "first":
        # alignkit tokenizes the text after <image> on its own, with the dummy prefix (module docstring).
        out.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=pre.replacement, prepend_scheme="always", split=pre.split
        )
    return out


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


def check_prompt_ids(tokenizer, exported, template, num_tokens: int, question: str = "What is in the image?") -> None:
    """ValueError unless the exported tokenizer, given the prompt with ``<image>`` repeated P times (what
    ``LlavaProcessor`` makes of it), gives alignkit's ids with the placeholder expanded."""
    template = get_template(template)
    prompt = generation_prompt(template, question)
    ours = tokenize_with_image(tokenizer, prompt, template.add_bos)
    image_id = exported.convert_tokens_to_ids(IMAGE_TOKEN)
    want = expand_image_placeholders(torch.tensor(ours), image_id, num_tokens).tolist()
    text = prompt.replace(IMAGE_TOKEN, IMAGE_TOKEN * num_tokens)
    got = exported(text, add_special_tokens=template.add_bos)["input_ids"]
    if got != want:
        i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise ValueError(
            f"the exported tokenizer does not reproduce the {template.name!r} prompt {prompt!r}: first difference at "
            f"token {i} (exported {got[i:i + 4]}, alignkit {want[i:i + 4]}); the exported model would see other "
            "token ids than it was trained on"
        )


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


def hf_image_processor(processor):
    """alignkit's ``OpenCLIPImageProcessor`` as a transformers image processor (CLIP's, or LLaVA's when it pads).

    Same steps: shortest side to the input size (bicubic), centre crop, normalise;
    ``pad_to_square`` -> ``LlavaImageProcessor(do_pad=True)`` (mean-colour padding, LLaVA's
    ``expand2square``). Resampling implementations differ, so pixels agree to a few 1e-2, not bit for bit.
    """
    from transformers import CLIPImageProcessor, LlavaImageProcessor
    from transformers.image_utils import PILImageResampling

    if processor.resize_mode != "shortest":
        raise ValueError(
            f"image resize_mode {processor.resize_mode!r} has no CLIPImageProcessor equivalent; only 'shortest' exports"
        )
    h, w = processor.image_size
    if h != w:
        raise ValueError(f"image size {h}x{w}: CLIPImageProcessor's shortest-edge resize needs a square input")
    resample = {"bicubic": PILImageResampling.BICUBIC, "bilinear": PILImageResampling.BILINEAR}[processor.interpolation]
    kwargs = dict(
        size={"shortest_edge": h}, crop_size={"height": h, "width": w}, do_resize=True, do_center_crop=True,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(processor.mean),
        image_std=list(processor.std), do_convert_rgb=True, resample=resample,
    )
    if processor.pad_to_square:
        return LlavaImageProcessor(do_pad=True, **kwargs)
    return CLIPImageProcessor(**kwargs)


# --------------------------------------------------------------------------- the model
@dataclass
class ExportedLlava:
    """What ``build_llava`` assembles: the HF model (weights assigned), its tokenizer and processor."""

    model: nn.Module
    tokenizer: object
    processor: object
    image_token_id: int
    added_rows: int  # embedding rows added for <image> (0 when the matrix already had room)


def _llm_parts(llm) -> tuple[nn.Module, nn.Module]:
    base = llm.get_decoder() if hasattr(llm, "get_decoder") else llm.base_model
    head = llm.get_output_embeddings()
    if base is None or head is None:
        raise ValueError(f"LLM {type(llm).__name__} has no decoder/lm_head pair to export")
    return base, head


def build_llava(model, image_processor, template, dtype: torch.dtype | None = None) -> ExportedLlava:
    """Assemble ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` from an alignkit ``LLaVAModel``.

    Args:
        model: a ``LLaVAModel`` with real weights (CLIP tower, mlp2x_gelu adapter, HF causal LM, tokenizer).
        image_processor: the ``OpenCLIPImageProcessor`` the model was trained with.
        template: the conversation template (name or object) prompts are written in.
        dtype: weights dtype of the export; None keeps the LLM's.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    visual = model.vision_encoder.tower
    vision_cfg = clip_vision_config(visual)
    vision_state = clip_vision_state_dict(visual)
    proj_state = projector_state_dict(model.adapter)
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; the export needs it (LLaVAModel(tokenizer=...))")
    tok = hf_tokenizer(model.tokenizer)
    p = model.num_visual_tokens
    check_prompt_ids(model.tokenizer, tok, template, p)

    llm = model.llm
    dtype = dtype or next(llm.parameters()).dtype
    base, head = _llm_parts(llm)
    text_state = {k: v.detach() for k, v in base.state_dict().items()}
    head_weight = head.weight.detach()
    embed_key = next(k for k, v in base.named_parameters() if v is llm.get_input_embeddings().weight)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    rows = head_weight.shape[0]
    added = max(0, image_id + 1 - rows)
    if added:
        emb = text_state[embed_key]
        text_state[embed_key] = torch.cat([emb, emb.float().mean(0, keepdim=True).to(emb.dtype).expand(added, -1)])
        head_weight = torch.cat([head_weight, head_weight.new_zeros(added, head_weight.shape[1])])
    text_cfg = copy.deepcopy(llm.config)
    text_cfg.vocab_size = rows + added

    n_blocks = vision_cfg.num_hidden_layers
    config = LlavaConfig(
        vision_config=vision_cfg,
        text_config=text_cfg,
        image_token_index=image_id,
        image_seq_length=p,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",  # drops CLS: open_clip's one prefix token
        vision_feature_layer=vision_feature_layer(model.vision_encoder.feature_layer, n_blocks),
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)),
    )
    with torch.device("meta"):
        hf = LlavaForConditionalGeneration(config)
    state = {}
    state.update({f"model.vision_tower.{k}": v for k, v in vision_state.items()})
    state.update({f"model.multi_modal_projector.{k}": v for k, v in proj_state.items()})
    state.update({f"model.language_model.{k}": v for k, v in text_state.items()})
    state["lm_head.weight"] = head_weight
    want = hf.state_dict()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    bad = [k for k in want if k in state and tuple(want[k].shape) != tuple(state[k].shape)]
    if missing or extra or bad:
        raise ValueError(f"export key mismatch: missing {missing[:5]}, unexpected {extra[:5]}, wrong shape {bad[:5]}")
    # The LLM's tensors are assigned as they are (no copy of a 7B model when the dtype already matches); the
    # vision and projector ones are cloned: q/k/v are views into one open_clip tensor, which safetensors refuses.
    llm_keys = {f"model.language_model.{k}" for k in text_state} | {"lm_head.weight"}
    hf.load_state_dict({k: v.to(dtype) if k in llm_keys else v.to(dtype).clone() for k, v in state.items()},
                       assign=True, strict=True)
    # Non-persistent buffers (position ids, rotary frequencies) are rebuilt when the model is loaded.
    hf.config.dtype = dtype
    gen = copy.deepcopy(llm.generation_config) if getattr(llm, "generation_config", None) is not None else None
    if gen is not None:
        if added:
            gen.suppress_tokens = sorted(set(gen.suppress_tokens or []) | {image_id})
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tok, key, None) is not None:
                setattr(gen, key, getattr(tok, key))
        hf.generation_config = gen

    chat = chat_template_for(template)
    tok.chat_template = chat
    processor = LlavaProcessor(
        image_processor=hf_image_processor(image_processor),
        tokenizer=tok,
        patch_size=vision_cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token, which "default" drops again: P image tokens
        chat_template=chat,
        image_token=IMAGE_TOKEN,
    )
    return ExportedLlava(hf, tok, processor, image_id, added)
