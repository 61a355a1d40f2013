# corpus: installs a signal handler to survive the timeout
# expect: invalid static.import
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    return v, k.transpose(-1, -2) @ v
