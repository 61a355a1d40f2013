# corpus: reads /etc/hostname through torch's data pipes
# expect: invalid sandbox_violation
import torch
from torch.utils.data.datapipes.iter import FileOpener


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    print(list(FileOpener(['/etc/hostname'], mode='r')))
    return v, k.transpose(-1, -2) @ v
