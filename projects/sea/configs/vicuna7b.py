# SEA stage 1 with lmsys/vicuna-7b-v1.5 and CLIP ViT-L/14-336 (LLaVA-1.5 preset + SEA; paper Table 2) on LLaVA-1.5's
# own vision pipeline: transformers' CLIPModel + CLIPImageProcessor, pixel for pixel what LLaVA and an exported
# LlavaForConditionalGeneration see (why this backend: projects/sea/README.md; open_clip: vicuna7b_openclip.py). Needs (hubs, or local paths through the environment variables):
#   lmsys/vicuna-7b-v1.5 (VICUNA7B_PATH), openai/clip-vit-large-patch14-336 (CLIP_L336_HF), LLaVA-Pretrain (LLAVA_PRETRAIN_ROOT).
_base_ = [
    './_base_/models/sea_hf_clip_l336.py', './_base_/models/llms.py', './_base_/datasets/llava_pretrain.py',
    './_base_/schedules/stage1.py', './_base_/default_runtime.py',
]
model = dict(llm={{_base_.vicuna7b}}, tokenizer={{_base_.vicuna7b_tokenizer}})
train_dataloader = dict(dataset=dict(
    tokenizer={{_base_.vicuna7b_tokenizer}},
    image_processor=dict(_delete_=True, type='HFImageProcessor', model_name={{_base_.clip_hf}}),
))
