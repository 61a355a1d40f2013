# corpus: a pure-Python infinite loop
# expect: timeout
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    while True:
        pass
    return v, k.transpose(-1, -2) @ v
