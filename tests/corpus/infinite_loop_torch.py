# corpus: a while loop over torch ops that never ends
# expect: timeout
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    x = q.sum()
    while bool(x > -1e30):
        x = x + 1
    return v, k.transpose(-1, -2) @ v
