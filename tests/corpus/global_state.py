# corpus: keeps state between calls in a global
# expect: invalid static.module_mutation
import torch

CALLS = 0


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    global CALLS
    CALLS += 1
    return v, k.transpose(-1, -2) @ v
