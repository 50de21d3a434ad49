# SEA stage 1 with Vicuna-7B and SigLIP-SO400M/14-384 (paper Table 2, "SigLIP-SO 384"): a 27 x 27 grid,
# P = 729 visual tokens; labels from SigLIP's attention-pool head applied per token (no CLS, no slicing).
# Needs (downloaded from the hubs, or local paths through the environment variables):
#   lmsys/vicuna-7b-v1.5 (VICUNA7B_PATH), open_clip 'ViT-SO400M-14-SigLIP-384' / 'webli'
#   (SIGLIP384_WEIGHTS; its tokenizer comes from the Hugging Face hub), LLaVA-Pretrain (LLAVA_PRETRAIN_ROOT).
_base_ = ['./vicuna7b_openclip.py']
siglip_weights = '{{$SIGLIP384_WEIGHTS:webli}}'
model = dict(
    vision_encoder=dict(model_name='ViT-SO400M-14-SigLIP-384', pretrained=siglip_weights),
    aligner=dict(labeler=dict(type='SigLIPTopNLabeler', negate=False)),
)
train_dataloader = dict(dataset=dict(
    image_token_length=729,
    image_processor=dict(model_name='ViT-SO400M-14-SigLIP-384', pretrained='webli'),
))
