# corpus: recurses without end
# expect: invalid exception
import torch


def deeper(x):
    return deeper(x) + 1


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    deeper(q)
    return v, k.transpose(-1, -2) @ v
