# Stage 2 of the LLaVA-1.5 baseline (paper Table 2, "LLaVA" row for Phi3-3.8B): phi3_mini_finetune.py from
# llava15_phi3_mini.py's adapter.
_base_ = ['./phi3_mini_finetune.py']
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/llava15_phi3_mini/adapter.safetensors}}'
model = dict(adapter_weights=stage1_adapter)
