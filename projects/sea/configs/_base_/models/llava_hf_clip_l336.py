# LLaVA-1.5's MLLM minus the LLM on the classes LLaVA itself loads: transformers' CLIPModel
# (hf_clip_l336.py), mlp2x_gelu adapter; the leaf configs preprocess with transformers'
# CLIPImageProcessor (HFImageProcessor). Stage 1 trains the adapter.
_base_ = ['./hf_clip_l336.py']
model = dict(
    type='LLaVAModel',
    vision_encoder={{_base_.clip_hf_encoder}},
    adapter=dict(type='MLPAdapter', depth=2, act='GELU'),
    trainable=['adapter'],
    autocast_dtype='bfloat16',
    gradient_checkpointing=False,
)
