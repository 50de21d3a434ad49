# Stage 2 (instruction tuning, LLaVA-1.5 preset, SEA off) of Vicuna-7B with SigLIP-SO400M/14-384,
# from vicuna7b_siglip384.py's adapter.
# Needs: lmsys/vicuna-7b-v1.5 (VICUNA7B_PATH), open_clip 'ViT-SO400M-14-SigLIP-384' / 'webli'
#   (SIGLIP384_WEIGHTS), LLaVA-Instruct mix665k (LLAVA_INSTRUCT_ROOT).
_base_ = ['./vicuna7b_openclip_finetune.py']
siglip_weights = '{{$SIGLIP384_WEIGHTS:webli}}'
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/vicuna7b_siglip384/adapter.safetensors}}'
model = dict(
    vision_encoder=dict(model_name='ViT-SO400M-14-SigLIP-384', pretrained=siglip_weights),
    adapter_weights=stage1_adapter,
)
train_dataloader = dict(dataset=dict(
    image_token_length=729,
    image_processor=dict(model_name='ViT-SO400M-14-SigLIP-384', pretrained='webli'),
))
