# Stage 1 (pretraining the adapter), LLaVA-1.5's preset: 558,128 pairs, global batch 256
# (32 per GPU x 8 GPUs) -> ceil(558128 / 256) = 2,181 iterations = 1 epoch; AdamW lr 1e-3, wd 0;
# linear warmup over ceil(0.03 * 2181) = 66 iterations, then cosine to 0; grad-norm clip 1.0
# (the Hugging Face Trainer default LLaVA ran with). bf16 comes from the model's own autocast.
max_iters = 2181
warmup_iters = 66
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
# The global batch this schedule was written for; `tools/train.py --auto-scale-lr` scales lr and
# iterations to the real one (docs/training.md).
auto_scale_lr = dict(enable=False, base_batch_size=256)
