# SEA stage 1 with meta-llama/Meta-Llama-3-8B-Instruct and CLIP ViT-L/14-336 (LLaVA-1.5 preset + SEA; paper Table 2).
# Needs (downloaded from the hubs, or local paths through the environment variables):
#   meta-llama/Meta-Llama-3-8B-Instruct (LLAMA3_8B_PATH), open_clip 'ViT-L-14-336' / 'openai' (CLIP_L336_WEIGHTS), LLaVA-Pretrain (LLAVA_PRETRAIN_ROOT).
_base_ = [
    './_base_/models/sea_clip_l336.py', './_base_/models/llms.py', './_base_/datasets/llava_pretrain.py',
    './_base_/schedules/stage1.py', './_base_/default_runtime.py',
]
model = dict(llm={{_base_.llama3_8b}}, tokenizer={{_base_.llama3_8b_tokenizer}})
train_dataloader = dict(dataset=dict(tokenizer={{_base_.llama3_8b_tokenizer}}))
