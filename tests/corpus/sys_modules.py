# corpus: tampers with sys.modules through torch
# expect: invalid static.forbidden_name
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    torch.sys.modules['torch'] = None
    return v, k.transpose(-1, -2) @ v
