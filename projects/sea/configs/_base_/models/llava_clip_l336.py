# LLaVA-1.5's MLLM minus the LLM: CLIP ViT-L/14-336 (open_clip 'ViT-L-14-336', 'openai' weights,
# from the hub or its cache), patch tokens of block -2, mlp2x_gelu adapter. Stage 1 trains the adapter.
# Set CLIP_L336_WEIGHTS to a local open_clip weights file to run offline.
clip_weights = '{{$CLIP_L336_WEIGHTS:openai}}'
model = dict(
    type='LLaVAModel',
    vision_encoder=dict(type='OpenCLIPVisionEncoder', model_name='ViT-L-14-336', pretrained=clip_weights,
                        feature_layer=-2),
    adapter=dict(type='MLPAdapter', depth=2, act='GELU'),
    trainable=['adapter'],
    autocast_dtype='bfloat16',
    gradient_checkpointing=False,
)
