# LLaVA-Pretrain (stage 1): blip_laion_cc_sbu_558k.json + images/ under one data root.
# Set LLAVA_PRETRAIN_ROOT (or edit data_root) to the folder holding both.
data_root = '{{$LLAVA_PRETRAIN_ROOT:data/LLaVA-Pretrain}}'
train_dataloader = dict(
    batch_size=32,  # per GPU; x 8 GPUs = LLaVA-1.5's global batch 256
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    # Infinite: an iteration-based loop with DefaultSampler restarts (and sleeps 2 s) every epoch.
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='alignkit.llava_collate'),
    dataset=dict(
        type='LLaVADataset',
        data_root=data_root,
        ann_file='blip_laion_cc_sbu_558k.json',
        image_folder='images',
        template='plain',
        max_length=2048,
        image_token_length=576,  # P of CLIP-L/336 (24 x 24)
        image_processor=dict(type='OpenCLIPImageProcessor', model_name='ViT-L-14-336', pretrained='openai'),
        # tokenizer: set by the leaf config (the LLM's tokenizer, shared with the model)
    ),
)
