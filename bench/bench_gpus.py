"""Evaluation throughput on one GPU vs every GPU of the machine (or one vs several evaluations at once on
one GPU, --one-gpu): candidates per hour, and the ratio.

The same N evaluations (the baseline naive.py with seeds 0..N-1, so every job costs the same) go
through the LocalExecutor's slot pool (agent/slots.py) twice: once with the slots of GPU 0 only, once
with the slots of all visible GPUs. Each job is a real isolated worker pinned to its GPU. Needs torch
only (no pydantic), so it runs with a GPU node's plain python3 from the repository root.
    .venv/bin/python bench/bench_gpus.py                      # quick profile, N = 2 x GPUs
    .venv/bin/python bench/bench_gpus.py --profile smoke --cpu-slots 2 --candidates 2   # dry run, no GPU
    python3 bench/bench_gpus.py --one-gpu --per-gpu 3 --candidates 6   # 1 vs 3 evaluations at once on GPU 0
    python3 bench/bench_gpus.py --one-gpu --per-gpu 2 --spares         # jobs handed to spare workers
An untimed smoke evaluation first fills the workers' caches (sandbox/isolation.py cache_root(): Python
bytecode and compiled kernels), so both measurements see a machine that has scored before; set
$ARCHER_CACHE to start from an empty one.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.slots import Job, SlotPool, run_job, visible_gpus  # noqa: E402
from sandbox.isolation import Spares  # noqa: E402

BASELINE = (Path(__file__).resolve().parent.parent / "sandbox" / "naive.py").read_text()


def measure(slots: list[str | None], jobs: list[Job], spares: bool = False) -> dict:
    """Run every job on these slots; wall time, statuses and per-job seconds. With spares, one spare worker per
    slot is started and ready before the clock starts (a search's steady state: the spare for the next job
    starts while the current one trains)."""
    pool = SlotPool(slots, Spares() if spares else None)
    if spares:
        pool.start_spares(jobs[0].device)
        while not all(w.ready() or w.proc.poll() is not None for w in pool.spares.waiting()):
            time.sleep(0.05)
    t0 = time.monotonic()
    with pool:
        futures = [pool.run_on_slot(lambda gpu, on_start, j=j: run_job(j, gpu, on_start, pool.spares)) for j in jobs]
        results = [f.result() for f in futures]
        wall = time.monotonic() - t0
    ok = [r for r in results if r["status"] == "ok"]
    return {"slots": len(slots), "gpus": sorted({s for s in slots if s is not None}), "candidates": len(jobs),
            "ok": len(ok), "wall_s": wall, "per_hour": len(jobs) / wall * 3600,
            "job_s": statistics.mean(r.get("timings", {}).get("total_s", 0.0) for r in results),
            "gpu": next((r.get("environment", {}).get("gpu", "") for r in ok), ""),
            "failures": [f"{r['status']}: {r['reason']}: {r['message']}" for r in results if r["status"] != "ok"][:3]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick", help="the evaluation profile (default quick)")
    ap.add_argument("--candidates", type=int, default=None, help="evaluations per run (default 2 x GPUs)")
    ap.add_argument("--per-gpu", type=int, default=1, help="evaluations at once on one GPU")
    ap.add_argument("--one-gpu", action="store_true",
                    help="compare 1 slot with --per-gpu slots, all on GPU 0 (several evaluations per GPU)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="wall-clock limit of one evaluation, s")
    ap.add_argument("--cpu-slots", type=int, default=0, help="no GPU: compare 1 CPU slot with this many")
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    ap.add_argument("--spares", action="store_true",
                    help="hand each job to a spare worker started ahead (the executor's default on GPUs)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed smoke evaluation that first fills the workers' bytecode and kernel caches")
    args = ap.parse_args(argv)

    if args.cpu_slots:
        one, every, device = [None], [None] * args.cpu_slots, "cpu"
    else:
        gpus = visible_gpus()
        if not gpus:
            print("bench_gpus: no GPU visible (use --cpu-slots K for a dry run on the CPU)", file=sys.stderr)
            return 2
        one = [gpus[0]] if args.one_gpu else [gpus[0]] * args.per_gpu
        every = [gpus[0]] * args.per_gpu if args.one_gpu else [g for g in gpus for _ in range(args.per_gpu)]
        device = "cuda"
    n = args.candidates or 2 * len(every)
    jobs = [Job(key=f"bench-{i}", code=BASELINE, profile=args.profile, seeds=(i,), device=device,
                timeout_s=args.timeout) for i in range(n)]
    if not args.no_warmup:     # caches as on a machine that has scored before (isolation.cache_root)
        warm = measure(one[:1], [Job(key="bench-warmup", code=BASELINE, profile="smoke", seeds=(0,), device=device,
                                     timeout_s=args.timeout)])
        print(f"warm-up: one untimed smoke evaluation filled the bytecode and kernel caches in {warm['wall_s']:.1f} s",
              flush=True)
    runs = [measure(one, jobs, args.spares), measure(every, jobs, args.spares)]
    base = runs[0]["per_hour"]
    print(f"profile {args.profile}, {n} evaluations of the baseline (seeds 0..{n - 1}), "
          f"device {runs[0]['gpu'] or device}{', spare workers' if args.spares else ''}")
    print("| slots | GPUs | candidates | ok | wall s | s per job | candidates/hour | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['slots']} | {','.join(r['gpus']) or 'cpu'} | {r['candidates']} | {r['ok']} | {r['wall_s']:.1f} | "
              f"{r['job_s']:.1f} | {r['per_hour']:.1f} | {r['per_hour'] / base:.2f} |")
    for r in runs:
        for line in r["failures"]:
            print(f"failed ({r['slots']} slots): {line}")
    if args.json is not None:
        args.json.write_text(json.dumps({"profile": args.profile, "spares": args.spares, "runs": runs}, indent=1))
    return 0 if all(r["ok"] == r["candidates"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
