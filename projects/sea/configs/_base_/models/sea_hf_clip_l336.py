# SEA on LLaVA-1.5's MLLM with transformers' CLIP (llava_hf_clip_l336.py): the preset of
# sea_clip_l336.py — top-10 labels by negated cosine (Eq. 6), scores <= 0 dropped, similarity-weighted
# / 2x2 window / dedup sampling, InfoNCE with ln s starting at 0, lambda = 1 — with the labeler on the
# encoder's own CLIPModel (HFCLIPTopNLabeler: post_layernorm -> visual_projection per patch token).
_base_ = ['./llava_hf_clip_l336.py']
word_list = None
model = dict(
    aligner=dict(
        type='SEAAligner',
        labeler=dict(type='HFCLIPTopNLabeler', word_list=word_list, top_n=10, min_score=0.0, negate=True),
        samplers=[
            dict(type='SimilarityWeightedSampler'),
            dict(type='WindowSampler', window=2),
            dict(type='DedupSampler'),
        ],
        loss=dict(type='InfoNCELoss', init_logit_scale=0.0),
        loss_weight=1.0,
    ),
    trainable=['adapter', 'aligner'],  # the aligner's only parameter: the loss temperature
)
