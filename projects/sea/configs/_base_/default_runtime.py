# Runtime shared by every SEA config: logging, checkpoints, the stage-1 artifact, seeding.
default_scope = 'alignkit'
custom_imports = dict(imports=['alignkit.engine'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=500, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [
    dict(type='AdapterArtifactHook'),  # <work_dir>/adapter.safetensors: the stage-1 artifact
    dict(type='RNGStateHook'),  # resumed runs draw the same SEA samples as uninterrupted ones
    dict(type='SkippedSamplesHook'),  # skipped/truncated samples counted per reason in the log
    dict(type='LabelCacheCheckHook'),  # a label cache must match the model and transform before step 1
    dict(type='NonFinitePatchesHook'),  # a warning when patches had NaN/inf dense embeddings (no label)
]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False, window_size=10)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=42, deterministic=False)
