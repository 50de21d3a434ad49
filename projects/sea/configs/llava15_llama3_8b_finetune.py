# Stage 2 of the LLaVA-1.5 baseline (paper Table 2, "LLaVA" row for Llama3-8B): llama3_8b_finetune.py from
# llava15_llama3_8b.py's adapter.
_base_ = ['./llama3_8b_finetune.py']
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/llava15_llama3_8b/adapter.safetensors}}'
model = dict(adapter_weights=stage1_adapter)
