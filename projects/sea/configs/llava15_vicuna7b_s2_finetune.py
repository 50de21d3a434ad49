# Stage 2 of the LLaVA-1.5 baseline with the S²-Wrapper at 1008 px (paper Table 2, "S²-Wrapper CLIP-L 1008" row,
# Vicuna-7B): vicuna7b_s2_finetune.py from llava15_vicuna7b_s2.py's adapter.
_base_ = ['./vicuna7b_s2_finetune.py']
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/llava15_vicuna7b_s2/adapter.safetensors}}'
model = dict(adapter_weights=stage1_adapter)
