# Alignment metrics on a held-out LLaVA-Pretrain split, every `val_interval` iterations (docs/evaluation.md):
# align/label_top1, label_top5, label_mean_rank, label_cosine, nearest_word_agreement, tacs.
# LLaVA-Pretrain has no validation split: hold some rows out of the training JSON yourself and name the file
# with LLAVA_PRETRAIN_VAL_ANN (relative to the data root). A leaf adds this file to its _base_ and sets:
#   train_cfg = dict(val_interval={{_base_.val_interval}})
#   val_dataloader = dict(dataset=dict(tokenizer=<the LLM's tokenizer>))
#   model = dict(align_eval=dict(labeler={{_base_.eval_labeler}}))  # only without an aligner (the baseline);
#                                                                   # SEA configs label with the aligner's labeler
val_interval = 500
val_ann_file = '{{$LLAVA_PRETRAIN_VAL_ANN:blip_laion_cc_sbu_558k_val.json}}'
# SEA's labeler (sea_hf_clip_l336.py, vicuna7b.py's): a baseline measured with it is scored on the same labels as
# SEA. Leaves on the open_clip tower use dict(type='CLIPTopNLabeler', ...) and OpenCLIPImageProcessor instead.
eval_labeler = dict(type='HFCLIPTopNLabeler', word_list=None, top_n=10, min_score=0.0, negate=True)
val_dataloader = dict(
    batch_size=16,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='alignkit.llava_collate'),
    dataset=dict(
        type='LLaVADataset',
        data_root='{{$LLAVA_PRETRAIN_ROOT:data/LLaVA-Pretrain}}',
        ann_file=val_ann_file,
        image_folder='images',
        template='plain',
        max_length=2048,
        image_token_length=576,  # P of CLIP-L/336; SigLIP-384 configs set 729
        image_processor=dict(type='HFImageProcessor',
                             model_name='{{$CLIP_L336_HF:openai/clip-vit-large-patch14-336}}'),
    ),
)
val_evaluator = dict(type='AlignmentMetric', ks=[1, 5])
val_cfg = dict(type='ValLoop')
