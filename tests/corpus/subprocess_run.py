# corpus: starts a process
# expect: invalid static.import
import subprocess


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    subprocess.run(['id'])
    return v, k.transpose(-1, -2) @ v
