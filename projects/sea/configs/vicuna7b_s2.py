# SEA stage 1 with Vicuna-7B and CLIP ViT-L/14-336 under the S²-Wrapper at 1008 px (paper Table 2, "S²-Wrapper
# CLIP-L 1008 + SEA"), as LLaVA runs S² (s2_scales 336,672,1008): images preprocessed at 1008 px; each scale's
# 336-px crops through the same tower, merged and average-pooled back to 24 x 24, the scales side by side on
# channels -> P = 576 visual tokens of D = 3 x 1024 = 3072 (LLaVA's mm_hidden_size). SEA's labels: the base
# (336 px) scale's dense embeddings, on the same 24 x 24 grid (docs/design.md, "S²").
# Needs the same as vicuna7b.py: lmsys/vicuna-7b-v1.5 (VICUNA7B_PATH), openai/clip-vit-large-patch14-336
#   (CLIP_L336_HF), LLaVA-Pretrain (LLAVA_PRETRAIN_ROOT).
_base_ = ['./vicuna7b.py']
s2_scales = (336, 672, 1008)
# The aligner's labeler (vicuna7b.py's) on S²'s 1008-px images: labels of the base scale.
s2_labeler = dict(type='MultiScaleLabeler', scales=s2_scales, labeler=dict(
    type='HFCLIPTopNLabeler', model_name={{_base_.clip_hf}}, word_list=None, top_n=10, min_score=0.0, negate=True))
model = dict(
    vision_encoder=dict(_delete_=True, type='MultiScaleVisionEncoder', encoder={{_base_.clip_hf_encoder}},
                        scales=s2_scales),
    aligner=dict(labeler=dict(_delete_=True, **s2_labeler)),
)
# CLIPImageProcessor resizing the shortest edge to 1008 and centre-cropping 1008 x 1008 (LLaVA's CLIPVisionTowerS2).
train_dataloader = dict(dataset=dict(image_processor=dict(image_size=s2_scales[-1])))
# An offline label cache for this config: tools/extract_labels.py projects/sea/configs/vicuna7b_s2.py --out DIR,
# then --cfg-options train_dataloader.dataset.label_cache=DIR (checked against the labeler and the 1008-px transform).
labeler = s2_labeler
label_data = dict(ann_file='{{$LLAVA_PRETRAIN_ROOT:data/LLaVA-Pretrain}}/blip_laion_cc_sbu_558k.json',
                  image_folder='{{$LLAVA_PRETRAIN_ROOT:data/LLaVA-Pretrain}}/images')
