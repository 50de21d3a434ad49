# The LLaVA-1.5 baseline on the open_clip tower: identical to vicuna7b_openclip.py but without SEA's aligner.
# Needs (downloaded from the hubs, or local paths through the environment variables):
#   lmsys/vicuna-7b-v1.5 (VICUNA7B_PATH), open_clip 'ViT-L-14-336' / 'openai' (CLIP_L336_WEIGHTS), LLaVA-Pretrain (LLAVA_PRETRAIN_ROOT).
_base_ = [
    './_base_/models/llava_clip_l336.py', './_base_/models/llms.py', './_base_/datasets/llava_pretrain.py',
    './_base_/schedules/stage1.py', './_base_/default_runtime.py',
]
model = dict(llm={{_base_.vicuna7b}}, tokenizer={{_base_.vicuna7b_tokenizer}})
train_dataloader = dict(dataset=dict(tokenizer={{_base_.vicuna7b_tokenizer}}))
