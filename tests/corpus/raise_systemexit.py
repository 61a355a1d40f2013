# corpus: raises SystemExit
# expect: invalid static.forbidden_name
import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    raise SystemExit(0)
