# The LLaVA-1.5 baseline of gemma2b.py (paper Table 2, "LLaVA" row for Gemma-2B): the same stage 1 without SEA's aligner.
_base_ = ['./gemma2b.py']
model = dict(aligner=None, trainable=['adapter'])
