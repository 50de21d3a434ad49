# The baseline: LLaVA-1.5 stage 1 with Vicuna-7B, identical to vicuna7b.py but without SEA's aligner: transformers'
# CLIP ViT-L/14-336 and CLIPImageProcessor, LLaVA's own vision pipeline (open_clip: llava15_vicuna7b_openclip.py).
# Needs (hubs, or local paths through the environment variables):
#   lmsys/vicuna-7b-v1.5 (VICUNA7B_PATH), openai/clip-vit-large-patch14-336 (CLIP_L336_HF), LLaVA-Pretrain (LLAVA_PRETRAIN_ROOT).
_base_ = [
    './_base_/models/llava_hf_clip_l336.py', './_base_/models/llms.py', './_base_/datasets/llava_pretrain.py',
    './_base_/schedules/stage1.py', './_base_/default_runtime.py',
]
model = dict(llm={{_base_.vicuna7b}}, tokenizer={{_base_.vicuna7b_tokenizer}})
train_dataloader = dict(dataset=dict(
    tokenizer={{_base_.vicuna7b_tokenizer}},
    image_processor=dict(_delete_=True, type='HFImageProcessor', model_name={{_base_.clip_hf}}),
))
