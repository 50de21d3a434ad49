# SEA-PRIME Phi3-3.8B, stage 1 (paper Table 1): SigLIP-SO400M/14-384 + microsoft/Phi-3-mini-4k-instruct with SEA, on Cambrian-1's
# 2.5M alignment data. Needs (hub names, or local paths through the environment variables): microsoft/Phi-3-mini-4k-instruct (PHI3_MINI_PATH),
#   open_clip 'ViT-SO400M-14-SigLIP-384' / 'webli' (SIGLIP384_WEIGHTS), Cambrian-Alignment (CAMBRIAN_ALIGNMENT_ROOT).
_base_ = [
    './_base_/models/sea_siglip384.py', './_base_/models/llms.py', './_base_/datasets/cambrian_alignment.py',
    './_base_/schedules/prime_stage1.py', './_base_/default_runtime.py',
]
model = dict(llm={{_base_.phi3_mini}}, tokenizer={{_base_.phi3_mini_tokenizer}})
train_dataloader = dict(dataset=dict(tokenizer={{_base_.phi3_mini_tokenizer}}))
