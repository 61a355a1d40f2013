# corpus: downloads code with torch.hub
# expect: invalid static.forbidden_name
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    torch.hub.load('owner/repo', 'model')
    return v, k.transpose(-1, -2) @ v
