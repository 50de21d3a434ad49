# SEA on top of LLaVA-1.5's MLLM (paper §3): top-10 CLIP labels per patch (negated cosine, scores
# <= 0 dropped), one label per patch by similarity (Eq. 7), one patch per 2x2 window, one patch per
# word in the batch, symmetric InfoNCE with a learnable temperature (ln s starts at 0, tau_0 = 1: the
# paper's "tau = 0"), lambda = 1 (the paper gives none). The labeler reuses the encoder's model.
# word_list None = the embedded default list (41,242 words); the paper's 12dicts 2of12 list:
#   --cfg-options model.aligner.labeler.word_list=/path/2of12.txt
_base_ = ['./llava_clip_l336.py']
word_list = None
model = dict(
    aligner=dict(
        type='SEAAligner',
        labeler=dict(type='CLIPTopNLabeler', word_list=word_list, top_n=10, min_score=0.0, negate=True),
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
