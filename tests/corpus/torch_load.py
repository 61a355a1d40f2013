# corpus: unpickles a file with torch.load
# expect: invalid static.forbidden_name
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    torch.load('/tmp/weights.pt')
    return v, k.transpose(-1, -2) @ v
