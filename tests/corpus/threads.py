# corpus: leaves a thread running
# expect: invalid static.import
import threading


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    threading.Thread(target=lambda: [None for _ in iter(int, 1)]).start()
    return v, k.transpose(-1, -2) @ v
