"""Milliseconds per training step of the MAD model: eager vs CUDA graphs, one member vs many.

`python3 bench/bench_step.py [--steps 50] [--out step.json]` on a GPU machine (torch only). For each
configuration it builds a real GroupTrainer (real data), warms up and captures, then times steps with
a device synchronisation around the timed region; it also times one validation pass.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import tasks  # noqa: E402
from sandbox.naive import delta_rule_chunkwise  # noqa: E402
from sandbox.train import Budget, Execution, GroupTrainer, Run  # noqa: E402

CONFIGS = [  # (task, setting changes, members, cuda graphs)
    ("context_recall", {}, 1, False),
    ("context_recall", {}, 1, True),
    ("context_recall", {}, 4, True),
    ("context_recall", {}, 16, True),
    ("context_recall", {"seq_len": 1024}, 1, False),
    ("context_recall", {"seq_len": 1024}, 1, True),
    ("context_recall", {"seq_len": 1024}, 4, True),
    ("selective_copy", {}, 1, True),
    ("selective_copy", {}, 10, True),
    ("compress", {}, 1, False),
    ("compress", {}, 1, True),
    ("compress", {}, 8, True),
    ("memorize", {"vocab_size": 8192}, 6, True),
]


def time_config(task, changes, members, graphs, steps, device) -> dict:
    setting = tasks.baseline_setting(task)
    if changes:
        setting = setting.replace(**changes)
    runs = [Run(setting, seed, 1e-3, 0.0) for seed in range(members)]
    ex = Execution(device=str(device), batched=True, cuda_graphs=graphs)
    budget = Budget(valid_size=1280, test_size=128)
    torch.cuda.reset_peak_memory_stats(device)
    t = GroupTrainer(runs, "delta_net", delta_rule_chunkwise, budget, device, ex, log=lambda s: None)
    x, y = t.train
    G, N = x.shape[:2]
    xf, yf = x.view(G * N, -1), y.view(G * N, -1)
    idx, keep = t._epoch_batches(N, budget.batch_size)

    def one(s):
        t.x_buf.copy_(xf[idx[s % idx.shape[0]]])
        t.y_buf.copy_(yf[idx[s % idx.shape[0]]])
        t._replay("train")

    t0 = time.monotonic()
    for s in range(5):
        one(s)
    torch.cuda.synchronize(device)
    warm_s = time.monotonic() - t0
    t0 = time.monotonic()
    for s in range(steps):
        one(s)
    torch.cuda.synchronize(device)
    ms = (time.monotonic() - t0) / steps * 1e3
    t.evaluate(t.valid)
    t0 = time.monotonic()
    t.evaluate(t.valid)
    torch.cuda.synchronize(device)
    eval_ms = (time.monotonic() - t0) * 1e3
    return {"task": task, "changes": changes, "members": members, "graphs": t.graphs, "ms_per_step": ms,
            "ms_per_member_step": ms / members, "eval_ms": eval_ms, "warmup_s": warm_s,
            "peak_gb": torch.cuda.max_memory_allocated(device) / 2 ** 30, "fallback": ex.fallback_reason}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.set_float32_matmul_precision("high")
    rows = []
    for cfg in CONFIGS:
        row = time_config(*cfg, steps=args.steps, device=device)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"{'task':16} {'change':18} {'G':>3} {'graph':>5} {'ms/step':>8} {'ms/member':>9} {'eval ms':>8} {'GB':>6}")
    for r in rows:
        ch = ",".join(f"{k}={v}" for k, v in r["changes"].items()) or "baseline"
        print(f"{r['task']:16} {ch:18} {r['members']:3d} {str(r['graphs']):>5} {r['ms_per_step']:8.2f} "
              f"{r['ms_per_member_step']:9.2f} {r['eval_ms']:8.1f} {r['peak_gb']:6.2f}")


if __name__ == "__main__":
    main()
