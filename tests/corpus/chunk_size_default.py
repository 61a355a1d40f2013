# corpus: chunk_size defaults to 64
# expect: invalid static.signature
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=64):
    return v, k.transpose(-1, -2) @ v
