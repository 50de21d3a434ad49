# Stage 2 (instruction tuning, LLaVA-1.5 preset, SEA off) of lmsys/vicuna-7b-v1.5 from vicuna7b.py's adapter, on
# transformers' CLIP ViT-L/14-336 with LLaVA-1.5's pad-to-square (mean-colour canvas) before CLIPImageProcessor.
# Needs (hubs, or local paths through the environment variables):
#   lmsys/vicuna-7b-v1.5 (VICUNA7B_PATH), openai/clip-vit-large-patch14-336 (CLIP_L336_HF), LLaVA-Instruct mix665k (LLAVA_INSTRUCT_ROOT).
_base_ = ['./vicuna7b_openclip_finetune.py', './_base_/models/hf_clip_l336.py']
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/vicuna7b/adapter.safetensors}}'
model = dict(vision_encoder=dict(_delete_=True, type='HFVisionEncoder', model_name={{_base_.clip_hf}},
                                 config={{_base_.clip_hf_config}}, feature_layer=-2),
             adapter_weights=stage1_adapter)
train_dataloader = dict(dataset=dict(
    image_processor=dict(_delete_=True, type='HFImageProcessor', model_name={{_base_.clip_hf}}, pad_to_square=True),
))
