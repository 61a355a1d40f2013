"""Is a training step on the GPU bit-for-bit repeatable, and where it is not, which op is not?

`python3 bench/bench_determinism.py [--steps 50] [--deterministic] [--out det.json]` on a GPU machine (torch
only), from the repo root. For each of quick's two largest groups (Selective Copy L=256 with 2 members,
Context Recall L=128 with 6), with the model's layers as sandbox/kernels.py's fused kernels under a CUDA
graph and as plain torch ops launched eagerly: two fresh GroupTrainers with the same seeds take `steps`
training steps on the same batches. Prints the largest difference between the two of the gradient after
the first step and of the parameters after the last (0 means bit-for-bit equal), and the step time.
`--deterministic` turns on what the worker does (sandbox/train.py deterministic_ops: torch's deterministic
implementations, warn_only, without the NaN-filling of new tensors; `--fill` puts that back) and lists the
ops that warned. Without it the steps run as torch does by default, as the worker does unless asked. `--kernels-diff` lists the kernels of one step that the setting swaps.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fuse import capture, eager_ms, graph_ms, trainer  # noqa: E402
from sandbox import kernels  # noqa: E402
from sandbox.naive import delta_rule_chunkwise  # noqa: E402
from sandbox.train import deterministic_ops  # noqa: E402

GROUPS = [("SC L=256 G=2", "selective_copy", 2), ("CR L=128 G=6", "context_recall", 6)]
LAUNCHES = [("kernels+graph", True, True), ("torch+eager", False, False)]


def train(task: str, members: int, use_kernels: bool, graph: bool, steps: int) -> dict:
    """One fresh trainer, `steps` steps on the first batches of its data: the first gradient, the last
    parameters and the summed losses."""
    kernels.set_enabled(use_kernels)
    t = trainer(task, {}, members, delta_rule_chunkwise)
    x, y = t.train
    B = t.budget.batch_size

    body = t._train_body
    run = capture(body).replay if graph else body    # both trainers of a pair take the same warm-up steps
    first = None
    for i in range(steps):
        j = (i * B) % (x.shape[1] - B + 1)
        t.x_buf.copy_(x[:, j:j + B])
        t.y_buf.copy_(y[:, j:j + B])
        run()
        if i == 0:
            first = t.model.bank.grad.clone()
    torch.cuda.synchronize()
    ms = (graph_ms if graph else eager_ms)(body, 20)
    return {"grad": first, "flat": t.model.bank.flat.clone(), "loss": t.loss_acc.clone(), "ms": ms}


def kernel_names(task: str, members: int, deterministic: bool) -> dict[str, int]:
    """The GPU kernels of one eager training step (fused layers on), by name, with their launch counts."""
    torch.use_deterministic_algorithms(False)
    if deterministic:
        deterministic_ops(torch.device("cuda"))
    kernels.set_enabled(True)
    t = trainer(task, {}, members, delta_rule_chunkwise)
    for _ in range(2):
        t._train_body()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        t._train_body()
        torch.cuda.synchronize()
    return {e.key[:120]: e.count for e in prof.key_averages()}


def kernels_diff(task: str, members: int) -> list[str]:
    """Kernels that run in one of the two modes only: what use_deterministic_algorithms swaps."""
    plain, det = kernel_names(task, members, False), kernel_names(task, members, True)
    return ([f"default only: {k} x{plain[k]}" for k in sorted(set(plain) - set(det))]
            + [f"deterministic only: {k} x{det[k]}" for k in sorted(set(det) - set(plain))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--fill", action="store_true", help="with --deterministic: torch also fills new tensors")
    ap.add_argument("--out", default=None)
    ap.add_argument("--kernels-diff", action="store_true",
                    help="only list the kernels of one step that differ with use_deterministic_algorithms on")
    args = ap.parse_args()
    if args.kernels_diff:
        for label, task, members in GROUPS:
            print(label)
            for line in kernels_diff(task, members):
                print(f"    {line}")
        return
    if args.deterministic:
        deterministic_ops(torch.device("cuda"))
        torch.utils.deterministic.fill_uninitialized_memory = args.fill
    rows = []
    print(f"{'group':14} {'layers+launch':14} {'first grad diff':>16} {'params diff':>12} {'loss diff':>10} "
          f"{'step ms':>8}  deterministic={args.deterministic} fill={args.fill}")
    for label, task, members in GROUPS:
        for name, use_kernels, graph in LAUNCHES:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                a = train(task, members, use_kernels, graph, args.steps)
                b = train(task, members, use_kernels, graph, args.steps)
            ops = sorted({str(w.message).splitlines()[0][:160] for w in caught
                          if "deterministic" in str(w.message)})
            row = {"group": label, "launch": name, "deterministic": args.deterministic, "steps": args.steps,
                   "first_grad_diff": float((a["grad"] - b["grad"]).abs().max()),
                   "params_diff": float((a["flat"] - b["flat"]).abs().max()),
                   "loss_diff": float((a["loss"] - b["loss"]).abs().max()),
                   "step_ms": round((a["ms"] + b["ms"]) / 2, 3), "nondeterministic_ops": ops}
            rows.append(row)
            print(f"{label:14} {name:14} {row['first_grad_diff']:16.3e} {row['params_diff']:12.3e} "
                  f"{row['loss_diff']:10.3e} {row['step_ms']:8.2f}", flush=True)
            for op in ops:
                print(f"    warned: {op}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
