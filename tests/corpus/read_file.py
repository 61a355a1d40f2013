# corpus: reads another file
# expect: invalid static.forbidden_name
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    print(open('/etc/passwd').read())
    return v, k.transpose(-1, -2) @ v
