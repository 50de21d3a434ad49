# The LLaVA-1.5 baseline of llama3_8b.py (paper Table 2, "LLaVA" row for Llama3-8B): the same stage 1 without SEA's aligner.
_base_ = ['./llama3_8b.py']
model = dict(aligner=None, trainable=['adapter'])
