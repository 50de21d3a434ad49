# The LLaVA-1.5 baseline of vicuna13b.py (paper Table 2, "LLaVA" row for Vicuna-13B): the same stage 1 without SEA's aligner.
_base_ = ['./vicuna13b.py']
model = dict(aligner=None, trainable=['adapter'])
