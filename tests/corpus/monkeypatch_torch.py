# corpus: replaces torch.matmul for everyone
# expect: invalid static.module_mutation
import torch

torch.matmul = lambda a, b: a


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    return v, k.transpose(-1, -2) @ v
