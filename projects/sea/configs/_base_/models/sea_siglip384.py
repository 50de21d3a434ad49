# SEA on the SigLIP-SO400M/14-384 MLLM: the preset of sea_clip_l336.py, labels from SigLIP's attention-pool head
# applied per token (no CLS token, no slicing) and plain (not negated) cosine.
_base_ = ['./llava_siglip384.py']
model = dict(
    aligner=dict(
        type='SEAAligner',
        labeler=dict(type='SigLIPTopNLabeler', word_list=None, top_n=10, min_score=0.0, negate=False),
        samplers=[
            dict(type='SimilarityWeightedSampler'),
            dict(type='WindowSampler', window=2),
            dict(type='DedupSampler'),
        ],
        loss=dict(type='InfoNCELoss', init_logit_scale=0.0),
        loss_weight=1.0,
    ),
    trainable=['adapter', 'aligner'],
)
