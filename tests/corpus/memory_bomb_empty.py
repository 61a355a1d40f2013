# corpus: asks torch for 16 TiB
# expect: oom
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    pool = torch.empty(2 ** 42)
    return v, k.transpose(-1, -2) @ v
