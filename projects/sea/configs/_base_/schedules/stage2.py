# Stage 2 (instruction tuning), LLaVA-1.5's preset: 665,298 conversations, global batch 128
# (16 per GPU x 8 GPUs) -> ceil(665298 / 128) = 5,198 iterations = 1 epoch; AdamW lr 2e-5, wd 0;
# warmup ceil(0.03 * 5198) = 156 iterations, cosine; DeepSpeed ZeRO-3 in bf16 (FlexibleRunner).
# Needs `pip install deepspeed`.
max_iters = 5198
warmup_iters = 156
runner_type = 'FlexibleRunner'
strategy = dict(
    type='DeepSpeedStrategy',
    zero_optimization=dict(stage=3, overlap_comm=True, contiguous_gradients=True,
                           stage3_gather_16bit_weights_on_model_save=True),
    bf16=dict(enabled=True),
    gradient_clipping=1.0,
    train_micro_batch_size_per_gpu=16,
    gradient_accumulation_steps=1,
)
optim_wrapper = dict(
    type='DeepSpeedOptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
# The global batch this schedule was written for (`tools/train.py --auto-scale-lr`, docs/training.md).
auto_scale_lr = dict(enable=False, base_batch_size=128)
