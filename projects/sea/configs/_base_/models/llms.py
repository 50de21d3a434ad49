# The paper's LLMs: where each comes from (one environment variable each: a hub name by default,
# a local folder to run offline) and its key dims, so a config's shapes can be checked without any
# download (LLaVAModel(init_empty=True) builds the LLM from `config` on the meta device).
# Loading a checkpoint checks it against these dims. Variables only: leaf configs pick one.
vicuna7b_path = '{{$VICUNA7B_PATH:lmsys/vicuna-7b-v1.5}}'
vicuna13b_path = '{{$VICUNA13B_PATH:lmsys/vicuna-13b-v1.5}}'
gemma2b_path = '{{$GEMMA2B_PATH:google/gemma-2b-it}}'
phi3_mini_path = '{{$PHI3_MINI_PATH:microsoft/Phi-3-mini-4k-instruct}}'
llama3_8b_path = '{{$LLAMA3_8B_PATH:meta-llama/Meta-Llama-3-8B-Instruct}}'

vicuna7b = dict(pretrained=vicuna7b_path, dtype='bfloat16', config=dict(
    model_type='llama', vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5))
vicuna13b = dict(pretrained=vicuna13b_path, dtype='bfloat16', config=dict(
    model_type='llama', vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
    num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096, rms_norm_eps=1e-5))
gemma2b = dict(pretrained=gemma2b_path, dtype='bfloat16', config=dict(
    model_type='gemma', vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
    num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192))
phi3_mini = dict(pretrained=phi3_mini_path, dtype='bfloat16', config=dict(
    model_type='phi3', vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096))
llama3_8b = dict(pretrained=llama3_8b_path, dtype='bfloat16', config=dict(
    model_type='llama', vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0))

# Tokenizers (load_tokenizer kwargs): Vicuna through SentencePiece with legacy=True, LLaVA-1.5's token ids.
vicuna7b_tokenizer = dict(name_or_path=vicuna7b_path)
vicuna13b_tokenizer = dict(name_or_path=vicuna13b_path)
gemma2b_tokenizer = dict(name_or_path=gemma2b_path)
phi3_mini_tokenizer = dict(name_or_path=phi3_mini_path)
llama3_8b_tokenizer = dict(name_or_path=llama3_8b_path)
