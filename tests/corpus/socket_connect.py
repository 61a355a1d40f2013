# corpus: opens a network connection
# expect: invalid static.import
import socket


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    socket.create_connection(('203.0.113.1', 80), timeout=1)
    return v, k.transpose(-1, -2) @ v
