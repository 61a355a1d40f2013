# corpus: rewrites builtins
# expect: invalid static.dunder
import torch

__builtins__['len'] = lambda x: 0


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    return v, k.transpose(-1, -2) @ v
