# Stage 2 of the LLaVA-1.5 baseline (paper Table 2, "LLaVA" row for Vicuna-7B, SigLIP-SO/384): vicuna7b_siglip384_finetune.py from
# llava15_vicuna7b_siglip384.py's adapter.
_base_ = ['./vicuna7b_siglip384_finetune.py']
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/llava15_vicuna7b_siglip384/adapter.safetensors}}'
model = dict(adapter_weights=stage1_adapter)
