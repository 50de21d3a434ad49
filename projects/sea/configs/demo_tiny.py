# The embedded demo: SEA stage 1 end to end on a CPU, offline, in under 3 minutes on 2 cores.
# A tiny CLIP ViT and a tiny Llama built locally with RANDOM weights (nothing is downloaded), real
# photographs shipped with scikit-image and captions written for alignkit (written to data_root on
# first run), the embedded default word list. It shows the pipeline running; it trains nothing useful.
# Every 10 iterations it logs the alignment metrics (align/label_mean_rank, ...) on 3 held-out photographs;
# compare with the adapter trained without SEA: --cfg-options model.aligner=None 'model.trainable=[adapter]'
#   python tools/train.py projects/sea/configs/demo_tiny.py
_base_ = ['./_base_/models/sea_clip_l336.py', './_base_/schedules/stage1.py', './_base_/default_runtime.py']
custom_imports = dict(imports=['alignkit.engine', 'alignkit.testing.demo'],
                      allow_failed_imports=False)
data_root = '{{$ALIGNKIT_DEMO_DATA:work_dirs/demo_tiny/data}}'
tokenizer = dict(type='demo_tokenizer')
model = dict(
    vision_encoder=dict(model_name='alignkit-demo-vit', pretrained=None),  # 8 x 8 grid: P = 64
    llm=dict(pretrained=None, config=dict(
        model_type='llama', vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)),
    tokenizer=tokenizer,
    # Label the held-out images with the aligner's labeler (built once); still there with model.aligner=None.
    align_eval=dict(labeler={{_base_.model.aligner.labeler}}),
)
demo_dataset = dict(type='DemoLLaVAPretrainDataset', data_root=data_root, max_length=256, image_token_length=64,
                    image_processor=dict(type='OpenCLIPImageProcessor', model_name='alignkit-demo-vit'))
# Held out: the last 6 rows (of 28): the 3 last photographs (clock, microscope, horse); training sees the first 9.
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, pin_memory=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='alignkit.llava_collate'),
    dataset=dict(demo_dataset, indices=22),  # the first 22 rows
)
val_dataloader = dict(
    batch_size=6, num_workers=0, persistent_workers=False, sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='alignkit.llava_collate'), dataset=dict(demo_dataset, indices=-6),
)
val_evaluator = dict(type='AlignmentMetric')  # align/label_top1, label_top5, label_mean_rank, ...
val_cfg = dict(type='ValLoop')
max_iters = 40
auto_scale_lr = dict(enable=False, base_batch_size=4)  # --auto-scale-lr: the demo schedule is for batch 4
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=4, end=max_iters),
]
# Validation every 10 iterations from the 10th on (runs shorter than 10 iterations skip it).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10, val_begin=10)
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=20))
custom_hooks = [dict(type='AdapterArtifactHook'), dict(type='RNGStateHook'), dict(type='SkippedSamplesHook'),
                dict(type='NonFinitePatchesHook'), dict(type='DemoReportHook')]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
