# SEA-PRIME Phi3-3.8B, stage 2 (paper Table 1): instruction tuning on Cambrian-7M from prime_phi3_mini.py's adapter,
# LLM and adapter at lr 2e-5 and the vision encoder tuned too at lr 2e-6, ZeRO-3. Needs: microsoft/Phi-3-mini-4k-instruct (PHI3_MINI_PATH),
#   open_clip 'ViT-SO400M-14-SigLIP-384' / 'webli' (SIGLIP384_WEIGHTS), Cambrian-10M (CAMBRIAN_10M_ROOT).
_base_ = [
    './_base_/models/llava_siglip384.py', './_base_/models/llms.py', './_base_/datasets/cambrian7m.py',
    './_base_/schedules/prime_stage2.py', './_base_/default_runtime.py',
]
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/prime_phi3_mini/adapter.safetensors}}'
model = dict(llm={{_base_.phi3_mini}}, tokenizer={{_base_.phi3_mini_tokenizer}}, adapter_weights=stage1_adapter,
             trainable=['adapter', 'llm', 'vision_encoder'], gradient_checkpointing=True)
train_dataloader = dict(dataset=dict(tokenizer={{_base_.phi3_mini_tokenizer}}, template='phi3'))
