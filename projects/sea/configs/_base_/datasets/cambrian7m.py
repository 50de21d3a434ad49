# Cambrian-7M (SEA-PRIME stage 2, paper Table 1): nyu-visionx/Cambrian-10M, jsons/Cambrian7M.jsonl (the curated
# 7M; Cambrian7M_withsystemprompt.jsonl is the variant its authors recommend) with the image folders extracted
# under one root. Mixes image rows and text-only rows (language-only instruction data). Set CAMBRIAN_10M_ROOT.
data_root = '{{$CAMBRIAN_10M_ROOT:data/Cambrian-10M}}'
num_rows = 7_000_000  # "Cambrian-7M"; 1 epoch = ceil(num_rows / global batch) iterations
train_dataloader = dict(
    batch_size=16,  # per GPU; x 8 GPUs = global batch 128 (LLaVA's hyperparameters)
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='LengthGroupedSampler', batch_size=16, group_by_modality=True),
    collate_fn=dict(type='alignkit.llava_collate'),
    dataset=dict(
        type='LLaVADataset',
        data_root=data_root,
        sources=[dict(ann_file='jsons/Cambrian7M.jsonl', image_folder='')],
        template='vicuna_v1',  # the leaf sets its LLM's chat template
        max_length=2048,
        image_token_length=729,
        image_processor=dict(type='OpenCLIPImageProcessor', model_name='ViT-SO400M-14-SigLIP-384', pretrained='webli',
                             pad_to_square=True),
    ),
)
