# transformers' CLIP ViT-L/14-336, the tower LLaVA-1.5 loads ('openai/clip-vit-large-patch14-336', from
# the hub or its cache; set CLIP_L336_HF to a local save_pretrained folder to run offline), as variables
# for the model and dataset configs: the HFVisionEncoder (patch tokens of layer -2, class token dropped:
# LLaVA's CLIPVisionTower.feature_select) and its dims, so shapes are checked without a download and a
# loaded model is checked against them.
clip_hf = '{{$CLIP_L336_HF:openai/clip-vit-large-patch14-336}}'
clip_hf_config = dict(model_type='clip', projection_dim=768, vision_config=dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
    patch_size=14, hidden_act='quick_gelu'))
clip_hf_encoder = dict(type='HFVisionEncoder', model_name=clip_hf, config=clip_hf_config, feature_layer=-2)
