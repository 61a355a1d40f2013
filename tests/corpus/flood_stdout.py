# corpus: prints without end
# expect: crashed output_limit
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    while True:
        print('x' * 4096)
    return v, k.transpose(-1, -2) @ v
