# corpus: sleeps
# expect: invalid static.import
import time


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    time.sleep(3600)
    return v, k.transpose(-1, -2) @ v
