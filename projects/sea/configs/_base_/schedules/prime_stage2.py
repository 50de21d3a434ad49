# SEA-PRIME stage 2 on Cambrian-7M: the stage-2 preset (ZeRO-3, AdamW lr 2e-5, warmup 3 %, cosine, 1 epoch) over
# ceil(7,000,000 / 128) = 54,688 iterations, warmup ceil(0.03 * 54688) = 1,641; the vision encoder trains too,
# at lr 2e-6 (paper §5.1): lr_mult 0.1 of the base lr for every parameter under `vision_encoder`.
_base_ = ['./stage2.py']
max_iters = 54688
warmup_iters = 1641
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'vision_encoder': dict(lr_mult=0.1)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
