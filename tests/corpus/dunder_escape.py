# corpus: climbs to object subclasses
# expect: invalid static.dunder
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    classes = ().__class__.__base__.__subclasses__()
    return v, k.transpose(-1, -2) @ v
