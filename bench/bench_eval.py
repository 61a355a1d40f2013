"""Wall time of one whole evaluation (worker start, checks, data, capture, training) in several modes.

`python3 bench/bench_eval.py [--profile quick] [--seeds 0] [--modes ...] [--out bench_eval.json]` on a GPU
machine, from the repo root. The default modes are issue 2's measurement: plain eager against CUDA graphs with
the fused kernels, in fresh processes (the second optimised run loads the kernels the first compiled) and on
spare workers, each ratio printed. Each mode is one real worker process (`python3 -m sandbox eval ...`)
scoring sandbox/naive.py, in the worker's default precision (float32) unless the mode ends in -bf16 (bf16
mixed precision); -det runs with the worker's --deterministic. The eager modes and `-torch` run the model's
layers as plain torch ops, the others (`eager-seq-kernels` too) through sandbox/kernels.py's fused kernels.
A mode may be listed twice: the first run with the kernels compiles them into an empty cache, later ones
load them. Any mode with `-spare` appended runs on a spare worker (`python -m sandbox spare`, as the executor
starts them ahead on GPUs): its wall time starts when the ready spare is handed the job, and the table shows
how long the spare took to get ready.
Every mode imports from one Python bytecode cache (PYTHONPYCACHEPREFIX, as isolated workers do) that an
untimed smoke evaluation fills first, so no mode pays for compiling torch's sources where the machine keeps
no bytecode (`--bytecode-cache off`: the machine's own setting, as before). Prints wall time, scores and
the ratio of each mode to the first, then candidates per GPU-hour.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sandbox.result import SPARE_READY  # noqa: E402
MODES = {  # name: worker flags; the plain eager reference keeps the layers as torch ops
    "eager-seq": ["--mode", "sequential", "--no-graphs", "--no-kernels"],
    "eager-seq-kernels": ["--mode", "sequential", "--no-graphs"],
    "graphs-seq": ["--mode", "sequential"],
    "graphs-batched": ["--mode", "batched"],
    "graphs-batched-torch": ["--mode", "batched", "--no-kernels"],
    "eager-seq-bf16": ["--mode", "sequential", "--no-graphs", "--no-kernels", "--precision", "bf16"],
    "graphs-batched-bf16": ["--mode", "batched", "--precision", "bf16"],
    "graphs-batched-det": ["--mode", "batched", "--deterministic"],     # [eval] deterministic
}


def worker_env(kernel_cache: Path, bytecode_cache: Path | None) -> dict[str, str]:
    env = {**os.environ, "TRITON_CACHE_DIR": str(kernel_cache)}
    if bytecode_cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode_cache)
    return env


@dataclass(frozen=True)
class Launch:
    """How the workers start: on which device (cpu: a dry run of this script), and what a spare worker runs
    ahead of its job (`python -m sandbox spare --prewarm`)."""
    device: str = "cuda"
    prewarm: str = "step"


def run_worker(name: str, candidate: str, flags: list[str], out_dir: Path, env: dict, launch: Launch,
               spare: bool = False) -> tuple[int, float, Path, float]:
    """One `python -m sandbox eval` of candidate: exit code, wall seconds, the result's path (out_dir/name.json;
    its output goes to out_dir/name.log) and, with `spare`, the seconds the worker took to be ready: it starts
    as `python -m sandbox spare`, and the clock starts when it is handed the job."""
    out = out_dir / f"{name}.json"
    job = ["eval", "--candidate", candidate, "--device", launch.device, "--out", str(out), *flags]
    log_path = out_dir / f"{name}.log"
    with open(log_path, "w") as log:
        if not spare:
            t0 = time.monotonic()
            rc = subprocess.call([sys.executable, "-m", "sandbox", *job], cwd=ROOT, stdout=log,
                                 stderr=subprocess.STDOUT, env=env)
            return rc, time.monotonic() - t0, out, 0.0
        t_spawn = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "sandbox", "spare", "--device", launch.device, "--prewarm",
                                 launch.prewarm], cwd=ROOT, env=env,
                                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        while SPARE_READY not in log_path.read_text() and proc.poll() is None:
            time.sleep(0.01)
        ready_s = time.monotonic() - t_spawn
        t0 = time.monotonic()
        proc.stdin.write((json.dumps(job) + "\n").encode())
        proc.stdin.close()
        rc = proc.wait()
        return rc, time.monotonic() - t0, out, ready_s


def warm_bytecode(bytecode_cache: Path, candidate: str, out_dir: Path, launch: Launch) -> float:
    """One untimed smoke evaluation, with a throwaway kernel cache, fills the bytecode cache with
    what an evaluation imports: the state of a machine that has scored one candidate before."""
    kernel_cache = Path(tempfile.mkdtemp(prefix="archer_kernels_warmup_"))
    return run_worker("bytecode_warmup", candidate, ["--profile", "smoke"], out_dir,
                      worker_env(kernel_cache, bytecode_cache), launch)[1]


def run_mode(mode: str, profile: str, seeds: str, candidate: str, out_dir: Path, kernel_cache: Path,
             n: int, bytecode_cache: Path | None = None, launch: Launch = Launch()) -> dict:
    spare = mode.endswith("-spare")
    rc, wall, out, ready_s = run_worker(f"eval_{profile}_{n}_{mode}", candidate,
                                        ["--profile", profile, "--seeds", seeds, *MODES[mode.removesuffix("-spare")]],
                                        out_dir, worker_env(kernel_cache, bytecode_cache), launch, spare=spare)
    result = json.loads(out.read_text()) if out.exists() and out.stat().st_size else {"status": f"exit {rc}"}
    return {"mode": mode, "wall_s": wall, "spare_ready_s": ready_s, "status": result.get("status"),
            "mean": result.get("mean"),
            "scores": {t: s["mean"] for t, s in result.get("scores", {}).items()},
            "timings": result.get("timings", {}), "cuda_graphs": result.get("execution", {}).get("cuda_graphs"),
            "precision": result.get("execution", {}).get("precision"),
            "kernels": bool(result.get("execution", {}).get("kernels")),
            "bytecode_cache": bytecode_cache is not None}


def measure(modes: list[str], profile: str, seeds: str, candidate: str, out_dir: Path,
            bytecode: bool = True, launch: Launch = Launch()) -> list[dict]:
    """The modes in order, sharing one kernel cache that starts empty: the first mode with the fused kernels
    compiles them (the first evaluation on a machine), later ones load them (every evaluation after); and,
    unless `bytecode` is off, one bytecode cache filled before the first."""
    kernel_cache = Path(tempfile.mkdtemp(prefix="archer_kernels_"))
    bytecode_cache = Path(tempfile.mkdtemp(prefix="archer_pycache_")) if bytecode else None
    if bytecode_cache is not None:
        print(f"bytecode cache filled by an untimed smoke evaluation in "
              f"{warm_bytecode(bytecode_cache, candidate, out_dir, launch):.1f} s", flush=True)
    rows = []
    for n, mode in enumerate(modes):
        rows.append(run_mode(mode, profile, seeds, candidate, out_dir, kernel_cache, n, bytecode_cache, launch))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def print_table(rows: list[dict], profile: str, seeds: str, device: str = "cuda") -> None:
    base = rows[0]["wall_s"]
    where = "the CPU (a dry run)" if device == "cpu" else "one GPU"
    print(f"one `{profile}` evaluation of sandbox/naive.py, seeds {seeds}, on {where} (worker wall time, all included)")
    print(f"{'mode':26} {'wall s':>8} {'train s':>8} {'capture s':>9} {'kernels s':>9} {'spare ready s':>13} "
          f"{'x vs ' + rows[0]['mode']:>16} {'cand./GPU-h':>11} {'mean':>6} status")
    for r in rows:
        t = r["timings"]
        print(f"{r['mode']:26} {r['wall_s']:8.1f} {t.get('train_s', 0):8.1f} {t.get('capture_s', 0):9.1f} "
              f"{t.get('kernels_s', 0):9.1f} {r.get('spare_ready_s', 0):13.1f} {base / r['wall_s']:16.2f} "
              f"{3600 / r['wall_s']:11.1f} {(r['mean'] or 0):6.3f} {r['status']} graphs={r['cuda_graphs']} "
              f"kernels={r['kernels']}")
    for r in rows:      # each optimised mode against the first eager one started the same way
        spare = r["mode"].endswith("-spare")
        eager = next((e for e in rows if e["mode"].startswith("eager") and e["mode"].endswith("-spare") == spare), None)
        if eager is not None and not r["mode"].startswith("eager"):
            print(f"{r['mode']} vs {eager['mode']}: {eager['wall_s'] / r['wall_s']:.2f}x "
                  f"({'workers started ahead' if spare else 'fresh worker processes'})")


DEFAULT_MODES = ("eager-seq,graphs-batched,graphs-batched,"
                 "eager-seq-spare,graphs-batched-spare,graphs-batched-spare")


def main(default_modes: str = DEFAULT_MODES) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--modes", default=default_modes)
    ap.add_argument("--candidate", default="sandbox/naive.py")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a dry run of this script")
    ap.add_argument("--spare-prewarm", default="step", choices=("none", "core", "step"),
                    help="what the -spare modes' workers run ahead of their job (sandbox/worker.py prewarm)")
    ap.add_argument("--logs", default=None, help="keep each worker's result and log here (default: a temporary "
                                                 "directory)")
    ap.add_argument("--bytecode-cache", default="warm", choices=("warm", "off"),
                    help="warm: every mode imports from a bytecode cache filled first; off: the machine's setting")
    args = ap.parse_args()
    launch = Launch(args.device, args.spare_prewarm)
    out_dir = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="bench_eval_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = measure(args.modes.split(","), args.profile, args.seeds, args.candidate, out_dir,
                   bytecode=args.bytecode_cache == "warm", launch=launch)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print_table(rows, args.profile, args.seeds, args.device)


if __name__ == "__main__":
    main()
