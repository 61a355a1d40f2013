# corpus: writes a file outside its directory
# expect: invalid static.forbidden_name
# escape: /tmp/archer-corpus-escape-open
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    open('/tmp/archer-corpus-escape-open', 'w').write('x')
    return v, k.transpose(-1, -2) @ v
