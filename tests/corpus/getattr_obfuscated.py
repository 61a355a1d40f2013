# corpus: builds an attribute name at run time
# expect: invalid static.forbidden_name
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    getattr(torch, 'o' + 's').system('id')
    return v, k.transpose(-1, -2) @ v
