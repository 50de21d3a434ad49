# Stage 2 (instruction tuning, LLaVA-1.5 preset, SEA off) of microsoft/Phi-3-mini-4k-instruct, from phi3_mini.py's adapter.
# Needs (downloaded from the hubs, or local paths through the environment variables):
#   microsoft/Phi-3-mini-4k-instruct (PHI3_MINI_PATH), open_clip 'ViT-L-14-336' / 'openai' (CLIP_L336_WEIGHTS), LLaVA-Instruct mix665k (LLAVA_INSTRUCT_ROOT).
_base_ = [
    './_base_/models/llava_clip_l336.py', './_base_/models/llms.py', './_base_/datasets/llava_instruct.py',
    './_base_/schedules/stage2.py', './_base_/default_runtime.py',
]
# The stage-1 artifact (written by AdapterArtifactHook); set STAGE1_ADAPTER for another run's.
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/phi3_mini/adapter.safetensors}}'
model = dict(llm={{_base_.phi3_mini}}, tokenizer={{_base_.phi3_mini_tokenizer}}, adapter_weights=stage1_adapter,
             trainable=['adapter', 'llm'], gradient_checkpointing=True)
train_dataloader = dict(dataset=dict(tokenizer={{_base_.phi3_mini_tokenizer}}, template='phi3'))
