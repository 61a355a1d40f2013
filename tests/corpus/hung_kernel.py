# corpus: keeps the GPU busy without end
# expect: timeout
# gpu
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    x = torch.randn(4096, 4096, device=q.device)
    while True:
        x = torch.sin(x @ x)
    return v, k.transpose(-1, -2) @ v
