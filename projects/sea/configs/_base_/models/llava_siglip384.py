# The LLaVA MLLM with SigLIP-SO400M/14-384 instead of CLIP-L/336 (paper Tables 1 and 2): open_clip
# 'ViT-SO400M-14-SigLIP-384' ('webli' weights; its tokenizer comes from the Hugging Face hub), 27 x 27 = 729 patch
# tokens of block -2, mlp2x_gelu adapter. Set SIGLIP384_WEIGHTS to a local open_clip weights file to run offline.
_base_ = ['./llava_clip_l336.py']
siglip_weights = '{{$SIGLIP384_WEIGHTS:webli}}'
model = dict(vision_encoder=dict(model_name='ViT-SO400M-14-SigLIP-384', pretrained=siglip_weights))
