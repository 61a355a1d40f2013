# corpus: replaces the loss the trainer uses
# expect: invalid static.module_mutation
import torch
import torch.nn.functional as F

F.cross_entropy = lambda logits, target, **kw: logits.sum() * 0


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    return v, k.transpose(-1, -2) @ v
