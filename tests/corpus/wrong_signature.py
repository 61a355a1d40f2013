# corpus: beta missing from the signature
# expect: invalid static.signature
import torch


def delta_rule_chunkwise(q, k, v, chunk_size=32):
    return v, k.transpose(-1, -2) @ v
