# Stage 2 of the LLaVA-1.5 baseline (paper Table 2, "LLaVA" row for Vicuna-7B): vicuna7b_finetune.py from
# llava15_vicuna7b.py's adapter.
_base_ = ['./vicuna7b_finetune.py']
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/llava15_vicuna7b/adapter.safetensors}}'
model = dict(adapter_weights=stage1_adapter)
