# Stage 2 (instruction tuning, LLaVA-1.5 preset, SEA off) of Vicuna-7B with the S²-Wrapper at 1008 px (paper
# Table 2, "S²-Wrapper CLIP-L 1008 + SEA"), from vicuna7b_s2.py's adapter (D = 3072 -> 4096).
# Needs: lmsys/vicuna-7b-v1.5 (VICUNA7B_PATH), openai/clip-vit-large-patch14-336 (CLIP_L336_HF),
#   LLaVA-Instruct mix665k (LLAVA_INSTRUCT_ROOT).
_base_ = ['./vicuna7b_finetune.py']
s2_scales = (336, 672, 1008)
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/vicuna7b_s2/adapter.safetensors}}'
model = dict(vision_encoder=dict(_delete_=True, type='MultiScaleVisionEncoder', encoder={{_base_.clip_hf_encoder}},
                                 scales=s2_scales),
             adapter_weights=stage1_adapter)
# LLaVA-1.5's pad-to-square, then CLIPImageProcessor at 1008 px.
train_dataloader = dict(dataset=dict(image_processor=dict(image_size=s2_scales[-1])))
