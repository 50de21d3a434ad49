# Paper Table 3, "+ Finetune VE" row: stage 2 of the LLaVA-1.5 baseline (llava15_vicuna7b.py's adapter, no SEA)
# with the vision encoder unfrozen at lr 2e-6. The "Baseline" row is llava15_vicuna7b_finetune.py.
_base_ = ['./vicuna7b_finetune_ve.py']
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/llava15_vicuna7b/adapter.safetensors}}'
model = dict(adapter_weights=stage1_adapter)
