# corpus: torch.utils.benchmark's callgrind runner starts processes
# expect: invalid sandbox_violation
import torch
import torch.utils.benchmark


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    torch.utils.benchmark.Timer('pass').collect_callgrind()
    return v, k.transpose(-1, -2) @ v
