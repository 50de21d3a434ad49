# The LLaVA-1.5 baseline of vicuna7b_siglip384.py (paper Table 2, "LLaVA" row for Vicuna-7B, SigLIP-SO/384): the same stage 1 without SEA's aligner.
_base_ = ['./vicuna7b_siglip384.py']
model = dict(aligner=None, trainable=['adapter'])
