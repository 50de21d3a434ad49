# The LLaVA-1.5 baseline of phi3_mini.py (paper Table 2, "LLaVA" row for Phi3-3.8B): the same stage 1 without SEA's aligner.
_base_ = ['./phi3_mini.py']
model = dict(aligner=None, trainable=['adapter'])
