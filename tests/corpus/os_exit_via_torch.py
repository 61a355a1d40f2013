# corpus: reaches os._exit through torch's own import of os
# expect: invalid static.forbidden_name
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    torch.os._exit(0)
