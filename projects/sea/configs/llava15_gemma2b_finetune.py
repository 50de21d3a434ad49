# Stage 2 of the LLaVA-1.5 baseline (paper Table 2, "LLaVA" row for Gemma-2B): gemma2b_finetune.py from
# llava15_gemma2b.py's adapter.
_base_ = ['./gemma2b_finetune.py']
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/llava15_gemma2b/adapter.safetensors}}'
model = dict(adapter_weights=stage1_adapter)
