"""sandbox/gated.py: the chunkwise gated delta rule agrees with its recurrence, and with naive.py when g == 0."""
import pytest
import torch
import torch.nn.functional as F

from sandbox.gated import gated_delta_rule_chunkwise, gated_delta_rule_recurrence
from sandbox.naive import delta_rule_chunkwise

CASES = [  # B, H, L, Dk, Dv, chunk_size
    (1, 1, 16, 4, 6, 16),
    (2, 3, 64, 8, 12, 16),
    (2, 2, 64, 16, 8, 32),
    (1, 2, 128, 32, 16, 64),
]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def random_inputs(B, H, L, Dk, Dv, dtype, decay_scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, H, L, Dk, generator=gen, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(B, H, L, Dk, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, H, L, Dv, generator=gen, dtype=dtype)
    beta = torch.rand(B, H, L, generator=gen, dtype=dtype)
    g = F.logsigmoid(torch.randn(B, H, L, generator=gen, dtype=dtype)) * decay_scale
    return [x.requires_grad_() for x in (q, k, v, beta, g)]


def outputs_and_grads(fn, inputs, seed=1):
    o, S = fn(*inputs)
    gen = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() \
        + (S * torch.randn(S.shape, generator=gen, dtype=S.dtype)).sum()
    return [o, S, *torch.autograd.grad(loss, inputs)]


LABELS = ("o", "S", "dq", "dk", "dv", "dbeta", "dg")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,H,L,Dk,Dv,C", CASES)
def test_gated_chunkwise_matches_recurrence_in_outputs_states_and_gradients(B, H, L, Dk, Dv, C, dtype):
    torch.set_num_threads(1)
    inputs = random_inputs(B, H, L, Dk, Dv, dtype)
    chunked = outputs_and_grads(lambda *x: gated_delta_rule_chunkwise(*x, chunk_size=C), inputs)
    exact = outputs_and_grads(gated_delta_rule_recurrence, inputs)
    for label, a, b in zip(LABELS, chunked, exact):
        assert a.shape == b.shape and a.dtype == dtype
        assert relative_error(a, b) < TOLERANCE[dtype], label


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_strong_decay_stays_finite_and_exact(dtype):
    """Chunk-local log decays near -1000 underflow to zero decay without overflow or NaN."""
    inputs = random_inputs(1, 2, 64, 8, 8, dtype, decay_scale=30.0)
    chunked = outputs_and_grads(gated_delta_rule_chunkwise, inputs)
    exact = outputs_and_grads(gated_delta_rule_recurrence, inputs)
    for label, a, b in zip(LABELS, chunked, exact):
        assert torch.isfinite(a).all(), label
        assert relative_error(a, b) < TOLERANCE[dtype], label


@pytest.mark.parametrize("C", [16, 32])
def test_gated_with_zero_log_decay_equals_the_ungated_delta_rule(C):
    q, k, v, beta, g = random_inputs(2, 2, 64, 8, 12, torch.float64)
    gated = outputs_and_grads(lambda q, k, v, b: gated_delta_rule_chunkwise(q, k, v, b, torch.zeros_like(g),
                                                                            chunk_size=C), [q, k, v, beta])
    plain = outputs_and_grads(lambda q, k, v, b: delta_rule_chunkwise(q, k, v, b, chunk_size=C), [q, k, v, beta])
    for label, a, b in zip(LABELS, gated, plain):
        assert relative_error(a, b) < 1e-12, label
