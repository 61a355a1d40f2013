"""sandbox/naive.py (the baseline candidate) agrees with the token-by-token recurrence in sandbox/reference.py.

Outputs, final states and gradients w.r.t. q, k, v, beta; relative error ||a - b|| / ||b||.
"""
import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sandbox.naive import delta_rule_chunkwise
from sandbox.reference import delta_rule_recurrence

CASES = [  # B, H, L, Dk, Dv, chunk_size
    (1, 1, 16, 4, 6, 16),
    (2, 3, 64, 8, 12, 16),
    (2, 2, 64, 16, 8, 32),
    (3, 1, 96, 8, 8, 32),
    (1, 2, 128, 32, 16, 64),
]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def random_inputs(B, H, L, Dk, Dv, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, H, L, Dk, generator=gen, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(B, H, L, Dk, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, H, L, Dv, generator=gen, dtype=dtype)
    beta = torch.rand(B, H, L, generator=gen, dtype=dtype)
    return [x.requires_grad_() for x in (q, k, v, beta)]


def outputs_and_grads(fn, inputs, seed=1):
    """o, S and the gradients of a random linear function of (o, S) w.r.t. every input."""
    o, S = fn(*inputs)
    gen = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() \
        + (S * torch.randn(S.shape, generator=gen, dtype=S.dtype)).sum()
    return [o, S, *torch.autograd.grad(loss, inputs)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,H,L,Dk,Dv,C", CASES)
def test_chunkwise_matches_recurrence_in_outputs_states_and_gradients(B, H, L, Dk, Dv, C, dtype):
    torch.set_num_threads(1)
    inputs = random_inputs(B, H, L, Dk, Dv, dtype)
    chunked = outputs_and_grads(lambda q, k, v, b: delta_rule_chunkwise(q, k, v, b, chunk_size=C), inputs)
    exact = outputs_and_grads(delta_rule_recurrence, inputs)
    for label, a, b in zip(("o", "S", "dq", "dk", "dv", "dbeta"), chunked, exact):
        assert a.shape == b.shape and a.dtype == dtype
        assert relative_error(a, b) < TOLERANCE[dtype], label


def test_chunkwise_returns_documented_shapes_and_computes_in_the_input_dtype():
    q, k, v, beta = random_inputs(2, 4, 64, 32, 16, torch.float32)
    o, S = delta_rule_chunkwise(q, k, v, beta)
    assert o.shape == (2, 4, 64, 16) and S.shape == (2, 4, 32, 16)
    assert o.dtype == S.dtype == torch.float32


def test_repeated_keys_with_full_beta_overwrite_the_memory():
    """With beta = 1 and one key repeated, the state maps that key to the latest value exactly."""
    B, H, L, D = 1, 1, 32, 8
    q, k, v, beta = (x.detach() for x in random_inputs(B, H, L, D, D, torch.float64))
    k = k[:, :, :1].expand(B, H, L, D).contiguous()
    o, S = delta_rule_chunkwise(k * D ** 0.5, k, v, torch.ones(B, H, L, dtype=torch.float64), chunk_size=16)
    assert relative_error(o, v) < 1e-10
    assert relative_error(k[0, 0, 0] @ S[0, 0], v[0, 0, -1]) < 1e-10


def test_candidate_imports_only_the_allow_list_and_never_syncs_with_the_host():
    tree = ast.parse((Path(__file__).parent.parent / "sandbox" / "naive.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules <= {"torch", "math", "einops", "typing", "functools"}
    calls = {node.func.attr for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert not calls & {"item", "tolist", "cpu", "numpy", "nonzero"}


@pytest.mark.slow
def test_chunkwise_compiles_as_one_graph_forward_and_backward():
    torch.set_num_threads(1)
    compiled = torch.compile(delta_rule_chunkwise, backend="aot_eager", fullgraph=True)
    inputs = random_inputs(2, 2, 64, 8, 8, torch.float32)
    got = outputs_and_grads(compiled, inputs)
    expected = outputs_and_grads(delta_rule_chunkwise, inputs)
    for a, b in zip(got, expected):
        assert relative_error(a, b) < 1e-6


@pytest.mark.gpu
def test_chunkwise_replays_in_a_cuda_graph():
    inputs = [x.detach().cuda().requires_grad_() for x in random_inputs(4, 4, 256, 32, 32, torch.float32)]
    grad_o = torch.randn(4, 4, 256, 32, device="cuda")

    def step():
        o, S = delta_rule_chunkwise(*inputs)
        return [o, *torch.autograd.grad((o * grad_o).sum() + S.sum(), inputs)]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured, step()):
        assert relative_error(a, b) < 1e-6
