# LLaVA-1.5 instruction data (stage 2): llava_v1_5_mix665k.json; its image paths (coco/, gqa/,
# ocr_vqa/, textvqa/, vg/) are relative to the data root. Set LLAVA_INSTRUCT_ROOT (or edit data_root).
data_root = '{{$LLAVA_INSTRUCT_ROOT:data/LLaVA-Instruct}}'
train_dataloader = dict(
    batch_size=16,  # per GPU; x 8 GPUs = LLaVA-1.5's global batch 128
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='LengthGroupedSampler', batch_size=16, group_by_modality=True),  # LLaVA's group_by_modality_length
    collate_fn=dict(type='alignkit.llava_collate'),
    dataset=dict(
        type='LLaVADataset',
        data_root=data_root,
        ann_file='llava_v1_5_mix665k.json',
        image_folder='',
        template='vicuna_v1',
        max_length=2048,
        image_token_length=576,
        image_processor=dict(type='OpenCLIPImageProcessor', model_name='ViT-L-14-336', pretrained='openai',
                             pad_to_square=True),  # LLaVA-1.5's image_aspect_ratio='pad'
        # tokenizer: set by the leaf config (the LLM's tokenizer, shared with the model)
    ),
)
