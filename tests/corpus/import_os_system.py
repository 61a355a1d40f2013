# corpus: runs a shell command
# expect: invalid static.import
# escape: /tmp/archer-corpus-escape-os
import os
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    os.system('touch /tmp/archer-corpus-escape-os')
    return v, k.transpose(-1, -2) @ v
