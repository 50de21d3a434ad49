# Cambrian-1's alignment data (SEA-PRIME stage 1, paper Table 1): nyu-visionx/Cambrian-Alignment,
# jsons/alignment_2.5m.jsonl with its image folders (coco/, sam/, allava/, ...) extracted under one root, as its
# README says. Set CAMBRIAN_ALIGNMENT_ROOT (or edit data_root). More annotation files, each with its own image
# root, go in `sources` (relative to data_root).
data_root = '{{$CAMBRIAN_ALIGNMENT_ROOT:data/Cambrian-Alignment}}'
num_rows = 2_500_000  # "2.5M caption pairs" (paper); 1 epoch = ceil(num_rows / global batch) iterations
train_dataloader = dict(
    batch_size=32,  # per GPU; x 8 GPUs = global batch 256 (LLaVA's hyperparameters, as the paper says)
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='alignkit.llava_collate'),
    dataset=dict(
        type='LLaVADataset',
        data_root=data_root,
        sources=[dict(ann_file='jsons/alignment_2.5m.jsonl', image_folder='')],
        template='plain',
        max_length=2048,
        image_token_length=729,  # P of SigLIP-SO400M/14-384 (27 x 27)
        image_processor=dict(type='OpenCLIPImageProcessor', model_name='ViT-SO400M-14-SigLIP-384', pretrained='webli'),
        # tokenizer: set by the leaf config (the LLM's tokenizer, shared with the model)
    ),
)
