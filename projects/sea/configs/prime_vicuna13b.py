# SEA-PRIME Vicuna-13B, stage 1 (paper Table 1): SigLIP-SO400M/14-384 + lmsys/vicuna-13b-v1.5 with SEA, on Cambrian-1's
# 2.5M alignment data. Needs (hub names, or local paths through the environment variables): lmsys/vicuna-13b-v1.5 (VICUNA13B_PATH),
#   open_clip 'ViT-SO400M-14-SigLIP-384' / 'webli' (SIGLIP384_WEIGHTS), Cambrian-Alignment (CAMBRIAN_ALIGNMENT_ROOT).
_base_ = [
    './_base_/models/sea_siglip384.py', './_base_/models/llms.py', './_base_/datasets/cambrian_alignment.py',
    './_base_/schedules/prime_stage1.py', './_base_/default_runtime.py',
]
model = dict(llm={{_base_.vicuna13b}}, tokenizer={{_base_.vicuna13b_tokenizer}})
train_dataloader = dict(dataset=dict(tokenizer={{_base_.vicuna13b_tokenizer}}))
