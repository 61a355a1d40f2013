# corpus: allocates 4 TiB on the GPU
# expect: oom
# gpu
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    pool = torch.empty(2 ** 40, device=q.device)
    return v, k.transpose(-1, -2) @ v
