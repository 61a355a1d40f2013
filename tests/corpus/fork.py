# corpus: forks the worker
# expect: invalid static.import
from os import fork


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    fork()
    return v, k.transpose(-1, -2) @ v
