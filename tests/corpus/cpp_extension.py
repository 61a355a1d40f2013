# corpus: compiles native code
# expect: invalid static.import
import torch
from torch.utils.cpp_extension import load_inline


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    return v, k.transpose(-1, -2) @ v
