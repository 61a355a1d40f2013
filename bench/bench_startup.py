"""Where an evaluation's fixed costs go: the worker's start, imports, CUDA start, kernel load and checks.

`python3 bench/bench_startup.py [--repeats 3] [--out startup.json]` on a GPU machine, from the repo root.
Every figure is the median wall time of fresh processes (the steps run one after the other in each), with the
worker's caches warm: one bytecode cache (PYTHONPYCACHEPREFIX, as isolated workers have) and one kernel cache,
both filled by an untimed first round. Then the slowest imports (`-X importtime`, cumulative) and each dynamic
check's seconds for sandbox/naive.py. Prints a table; figures, not verdicts.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import ROOT, worker_env  # noqa: E402

# each step prints its own end time (time.monotonic) after the one before; the process's start is taken from
# the parent's clock around it
STEPS = r"""
import time, json, sys
marks = {"python": time.monotonic()}
import torch
marks["import torch"] = time.monotonic()
torch.cuda.init(); torch.empty(1, device="cuda")
marks["cuda init"] = time.monotonic()
import sandbox.worker
from sandbox import kernels
from sandbox.model import HEADS, NORM_EPS, SWIGLU_INNER, WIDTH
marks["import sandbox.worker"] = time.monotonic()
kernels.set_enabled(True)
kernels.warm(torch.device("cuda"), (torch.float32,), width=WIDTH, heads=HEADS, inner=SWIGLU_INNER, eps=NORM_EPS)
torch.cuda.synchronize()
marks["kernels.warm"] = time.monotonic()
from sandbox.guard import load_candidate
from sandbox.dynamic_checks import run_dynamic_checks
checks = run_dynamic_checks(load_candidate("sandbox/naive.py"), "cuda")
marks["dynamic checks"] = time.monotonic()
print("MARKS " + json.dumps({"marks": marks, "checks": {c["name"]: c["seconds"] for c in checks}}))
"""


def one_round(env: dict) -> dict:
    import time
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", STEPS], cwd=ROOT, env=env, capture_output=True, text=True)
    end = time.monotonic()
    line = next((x for x in out.stdout.splitlines() if x.startswith("MARKS ")), None)
    if line is None:
        raise SystemExit(f"the measuring process failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    data = json.loads(line[6:])
    marks, prev, steps = data["marks"], t0, {}
    for name, at in marks.items():
        steps[name] = at - prev
        prev = at
    steps["exit"] = end - prev
    return {"steps": steps, "checks": data["checks"]}


def importtime(env: dict, rows: int = 15) -> list[tuple[float, str]]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sandbox.worker"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    found = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if len(name) - len(name.lstrip()) <= 3:      # top-level imports and their direct children
                found.append((int(parts[1]) / 1e6, name.strip()))
    return sorted(found, reverse=True)[:rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    env = worker_env(Path(tempfile.mkdtemp(prefix="archer_kernels_")), Path(tempfile.mkdtemp(prefix="archer_pyc_")))
    cold = one_round(env)
    rounds = [one_round(env) for _ in range(args.repeats)]
    median = {k: statistics.median(r["steps"][k] for r in rounds) for k in rounds[0]["steps"]}
    checks = {k: statistics.median(r["checks"][k] for r in rounds) for k in rounds[0]["checks"]}
    slow = importtime(env)
    print(f"fixed costs of one worker, warm caches, median of {args.repeats} fresh processes (s)")
    for name, s in median.items():
        print(f"  {name:24} {s:7.3f}   (first round, cold caches: {cold['steps'][name]:.3f})")
    print(f"  {'total':24} {sum(median.values()):7.3f}")
    print("dynamic checks (s): " + ", ".join(f"{k} {v:.3f}" for k, v in checks.items()))
    print("slowest imports of sandbox.worker (cumulative s):")
    for s, name in slow:
        print(f"  {s:7.3f}  {name}")
    if args.out:
        Path(args.out).write_text(json.dumps({"median": median, "cold": cold, "checks": checks,
                                              "imports": slow}, indent=1))


if __name__ == "__main__":
    main()
