# Stage 2 (instruction tuning, LLaVA-1.5 preset, SEA off) of lmsys/vicuna-13b-v1.5, from vicuna13b.py's adapter.
# Needs (downloaded from the hubs, or local paths through the environment variables):
#   lmsys/vicuna-13b-v1.5 (VICUNA13B_PATH), open_clip 'ViT-L-14-336' / 'openai' (CLIP_L336_WEIGHTS), LLaVA-Instruct mix665k (LLAVA_INSTRUCT_ROOT).
_base_ = [
    './_base_/models/llava_clip_l336.py', './_base_/models/llms.py', './_base_/datasets/llava_instruct.py',
    './_base_/schedules/stage2.py', './_base_/default_runtime.py',
]
# The stage-1 artifact (written by AdapterArtifactHook); set STAGE1_ADAPTER for another run's.
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/vicuna13b/adapter.safetensors}}'
model = dict(llm={{_base_.vicuna13b}}, tokenizer={{_base_.vicuna13b_tokenizer}}, adapter_weights=stage1_adapter,
             trainable=['adapter', 'llm'], gradient_checkpointing=True)
train_dataloader = dict(dataset=dict(tokenizer={{_base_.vicuna13b_tokenizer}}, template='vicuna_v1'))
