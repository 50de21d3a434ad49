# Stage 2 of demo_smollm2.py on the CPU: the adapter from its stage 1 and the real SmolLM2-135M-Instruct both
# train (SEA off) on the demo photographs in SmolLM2's own chat format (chatml with its default system prompt,
# token for token what its apply_chat_template renders). Then ask it about a photograph:
#   python tools/train.py projects/sea/configs/demo_smollm2_finetune.py
#   python tools/chat.py work_dirs/demo_smollm2_finetune/iter_20.pth \
#       --image work_dirs/demo_smollm2/data/images/coffee.png
_base_ = ['./demo_smollm2.py']
stage1_adapter = '{{$STAGE1_ADAPTER:work_dirs/demo_smollm2/adapter.safetensors}}'
template = dict(name='chatml', system='You are a helpful AI assistant named SmolLM, trained by Hugging Face')
model = dict(aligner=None, adapter_weights=stage1_adapter, trainable=['adapter', 'llm'])
train_dataloader = dict(dataset=dict(template=template))
val_dataloader = dict(dataset=dict(template=template))
max_iters = 20
optim_wrapper = dict(optimizer=dict(lr=2e-5))  # LLaVA-1.5's stage-2 learning rate
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=2, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=10, val_begin=10)
default_hooks = dict(checkpoint=dict(interval=max_iters))
