# corpus: unbalanced parenthesis
# expect: invalid static.syntax
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    o = (v * beta[..., None]
    return v, k.transpose(-1, -2) @ v
