# corpus: exits the process
# expect: invalid static.import
import sys


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    sys.exit(0)
    return v, k.transpose(-1, -2) @ v
