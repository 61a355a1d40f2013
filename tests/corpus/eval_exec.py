# corpus: executes a string
# expect: invalid static.forbidden_name
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    exec("import os; os.system('id')")
    return v, k.transpose(-1, -2) @ v
