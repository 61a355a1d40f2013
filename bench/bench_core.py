"""Where a training step of the baseline candidate spends GPU time, and what its chunk loop costs.

`python3 bench/bench_core.py [--candidate sandbox/naive.py]` on a GPU machine: times the candidate's
forward + backward at the MAD shapes (B=128, H=4, D=32) for L = 128 and 1024, the same with the chunk
loop iterating over `unbind` views instead of indexing (if the source has the baseline's loop), and
prints the top kernels of one full training step at L=1024 (torch.profiler).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import tasks  # noqa: E402
from sandbox.train import Budget, Execution, GroupTrainer, Run  # noqa: E402

INDEXED_LOOP = """    for n in range(N):
        # The delta: pseudo-values minus what the state entering the chunk already predicts.
        u_n = u[:, :, n] - w[:, :, n] @ S
        o.append(q[:, :, n] @ S + attn[:, :, n] @ u_n)
        S = S + k[:, :, n].transpose(-1, -2) @ u_n"""
UNBOUND_LOOP = """    for q_n, k_n, u_n, w_n, a_n in zip(q.unbind(2), k.unbind(2), u.unbind(2), w.unbind(2), attn.unbind(2)):
        u_n = u_n - w_n @ S
        o.append(q_n @ S + a_n @ u_n)
        S = S + k_n.transpose(-1, -2) @ u_n"""


def load(source: str, name: str):
    ns: dict = {}
    exec(compile(source, name, "exec"), ns)
    return ns["delta_rule_chunkwise"]


def time_core(fn, L: int, reps: int = 10) -> float:
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (128, 4, L, 32)
    q = F.normalize(torch.randn(shape, device="cuda", generator=g), dim=-1).requires_grad_()
    k = F.normalize(torch.randn(shape, device="cuda", generator=g), dim=-1).requires_grad_()
    v = torch.randn(shape, device="cuda", generator=g).requires_grad_()
    beta = torch.rand(shape[:3], device="cuda", generator=g).requires_grad_()

    def step():
        o, S = fn(q, k, v, beta, chunk_size=32)
        (o.square().sum() + S.square().sum()).backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.monotonic()
    for _ in range(reps):
        step()
    torch.cuda.synchronize()
    return (time.monotonic() - t0) / reps * 1e3


def profile_step(path: Path) -> None:
    setting = tasks.baseline_setting("context_recall").replace(seq_len=1024)
    ex = Execution(device="cuda", batched=True, cuda_graphs=False)
    t = GroupTrainer([Run(setting, 0, 1e-3, 0.0)], "delta_net", load(path.read_text(), str(path)),
                     Budget(valid_size=128, test_size=128), torch.device("cuda"), ex, log=lambda s: None)
    x, y = t.train
    t.x_buf.copy_(x[:, :128])
    t.y_buf.copy_(y[:, :128])
    for _ in range(3):
        t._replay("train")
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t._replay("train")
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", default="sandbox/naive.py")
    args = ap.parse_args()
    torch.set_float32_matmul_precision("high")
    path = Path(args.candidate)
    source = path.read_text()
    variants = {"as written": load(source, str(path))}
    if INDEXED_LOOP in source:
        variants["unbind loop"] = load(source.replace(INDEXED_LOOP, UNBOUND_LOOP), "unbound")
    profile_step(path)
    print(f"{'variant':12} {'L':>5} {'fwd+bwd ms':>10}")
    for name, fn in variants.items():
        for L in (128, 1024):
            print(f"{name:12} {L:5d} {time_core(fn, L):10.2f}")


if __name__ == "__main__":
    main()
