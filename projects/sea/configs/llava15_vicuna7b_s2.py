# The LLaVA-1.5 baseline of vicuna7b_s2.py (paper Table 2, "S²-Wrapper CLIP-L 1008" row, Vicuna-7B): the same
# stage 1 without SEA's aligner.
_base_ = ['./vicuna7b_s2.py']
model = dict(aligner=None, trainable=['adapter'])
