# SEA-PRIME stage 1 on Cambrian-Alignment: the stage-1 preset (AdamW lr 1e-3, wd 0, warmup 3 %, cosine, 1 epoch)
# over ceil(2,500,000 / 256) = 9,766 iterations, warmup ceil(0.03 * 9766) = 293.
_base_ = ['./stage1.py']
max_iters = 9766
warmup_iters = 293
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
