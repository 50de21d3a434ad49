# Paper Table 3, "+ SEA" row: stage 2 of SEA-LLaVA (Vicuna-7B, CLIP-L/336, LLaVA-1.5 data) from vicuna7b.py's
# adapter, with the vision encoder unfrozen ("Finetune VE") at lr 2e-6 (lr_mult 0.1 of the stage-2 lr 2e-5).
_base_ = ['./vicuna7b_finetune.py']
model = dict(trainable=['adapter', 'llm', 'vision_encoder'])
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'vision_encoder': dict(lr_mult=0.1)}))
