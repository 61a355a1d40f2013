# corpus: asks Python for a list of 2**40 items
# expect: oom
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    pool = [0] * (2 ** 40)
    return v, k.transpose(-1, -2) @ v
