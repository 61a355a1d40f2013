"""The worker's evaluation: harden, check, load the candidate, train a profile's runs, write one result.

`python -m sandbox eval --candidate FILE --profile NAME --seeds 0,1,2 --model M --device D --out F`
(or `--result-fd N`, the pipe sandbox/isolation.py reads). Every failure becomes a result with a
status; the result is written only after the candidate has run. `python -m sandbox spare --device D` is a
worker started ahead of its job: it imports, starts CUDA and loads the fused kernels, then reads the job's
`eval` arguments from stdin. Tested by tests/test_worker.py and tests/test_spares.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import socket
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

from sandbox import guard, kernels
from sandbox.dynamic_checks import is_out_of_memory, run_dynamic_checks
from sandbox.model import HEADS, NORM_EPS, SWIGLU_INNER, WIDTH
from sandbox.profiles import PROFILES, get_profile
from sandbox.result import MODELS, SPARE_READY, TASKS, failure
from sandbox.static_checks import check_static
from sandbox.train import NonFiniteLoss, Outcome, deterministic_ops, prefetch_first_group, train_runs

LOG_TAIL_CHARS = 4000


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="score one candidate on a profile and write the result JSON")
    ev.add_argument("--candidate", required=True, help="the naive.py to score (ignored for reference models)")
    ev.add_argument("--profile", default="smoke", choices=sorted(PROFILES))
    ev.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's)")
    ev.add_argument("--model", default="delta_net", choices=MODELS)
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ev.add_argument("--out", default=None, help="write the result JSON to this file")
    ev.add_argument("--result-fd", type=int, default=None, help="write the result JSON to this open descriptor")
    ev.add_argument("--mode", default="batched", choices=("batched", "sequential"),
                    help="batched: runs sharing shapes train together; sequential: one run at a time")
    ev.add_argument("--no-graphs", action="store_true", help="plain eager steps on CUDA (for benchmarks)")
    ev.add_argument("--max-steps", type=int, default=None,
                    help="cap every run at this many optimiser steps instead of the profile's cap (0: MAD's "
                         "200 epochs); for checking whether a score is limited by the cap")
    ev.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                    help="fp32: float32 with TF32 matmuls (the default); bf16: MAD's bf16 mixed precision on "
                         "CUDA, the candidate's core still in float32 (3-9%% faster steps on an H100, measured). The CPU "
                         "always trains in float32")
    ev.add_argument("--no-kernels", action="store_true",
                    help="the model's layers as plain torch ops instead of sandbox/kernels.py's fused Triton "
                         "kernels (for benchmarks; the CPU always uses the torch ops)")
    ev.add_argument("--deterministic", action="store_true",
                    help="on CUDA, every op in its deterministic implementation (sandbox/train.py "
                         "deterministic_ops): the evaluation repeats bit for bit, its steps 6-7%% slower on an "
                         "H100 (measured with torch's NaN-filling of new tensors, which the worker leaves off)")
    ev.add_argument("--tasks", default=None, help="comma-separated subset of the profile's tasks")
    ev.add_argument("--only", default=None, help="comma-separated subset of its settings, as task/setting")
    ev.add_argument("--checks-only", action="store_true",
                    help="run the static and dynamic checks and stop: status ok with no scores when they pass")
    sp = sub.add_parser("spare", help="a worker started ahead of its job: import, start CUDA and load the fused "
                                      "kernels, then read the job's `eval` arguments from stdin (one JSON list)")
    sp.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    sp.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="which kernels to load ahead")
    sp.add_argument("--prewarm", default="step", choices=("none", "core", "step"),
                    help="what else to run ahead: core: the baseline delta rule forward and backward (cuBLAS, the "
                         "solver, their kernels loaded); step: that and a few graphed training steps of a tiny model")
    return ap.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no CUDA device")
    return torch.device(name)


def environment(device: torch.device) -> dict[str, str]:
    """Collected before hardening (the hostname needs a socket call)."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda or "",
           "gpu": "", "hostname": socket.gethostname()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def summarize(outcomes: list[Outcome], seeds: list[int]) -> dict:
    """Per setting and seed keep the (lr, wd) run with the best validation accuracy; per task average."""
    chosen: dict[tuple, Outcome] = {}
    for o in outcomes:
        key = (o.run.setting.task, o.run.setting.name, o.run.seed)
        if key not in chosen or o.valid_accuracy > chosen[key].valid_accuracy:
            chosen[key] = o
    scores, wholes, tokens, per_seed_mean = {}, {}, {}, {s: [] for s in seeds}
    for task in TASKS:
        acc, whole, tok = [], [], []
        for seed in seeds:
            picks = [o for (t, _, s), o in chosen.items() if t == task and s == seed]
            if not picks:
                break
            acc.append(statistics.fmean(o.accuracy for o in picks))
            whole.append(statistics.fmean(o.whole_set_accuracy for o in picks))
            tok.append(statistics.fmean(o.token_accuracy for o in picks))
        if len(acc) != len(seeds):
            continue
        scores[task], wholes[task], tokens[task] = score(acc), score(whole), score(tok)
        for seed, a in zip(seeds, acc):
            per_seed_mean[seed].append(a)
    overall = [statistics.fmean(v) for v in per_seed_mean.values() if v]
    settings = [{"task": o.run.setting.task, "setting": o.run.setting.name, "seed": o.run.seed, "lr": o.run.lr,
                 "weight_decay": o.run.weight_decay, "accuracy": o.accuracy,
                 "whole_set_accuracy": o.whole_set_accuracy, "token_accuracy": o.token_accuracy,
                 "valid_accuracy": o.valid_accuracy, "steps": o.steps, "best_step": o.best_step,
                 "seconds": round(o.seconds, 3)} for o in outcomes]
    return {"scores": scores, "whole_set_accuracy": wholes, "token_accuracy": tokens,
            "mean": statistics.fmean(overall) if overall else 0.0,
            "std": statistics.stdev(overall) if len(overall) > 1 else 0.0, "settings": settings}


def score(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": list(values)}


class LogTail:
    """Progress lines go to stdout (the isolation layer keeps the file) and the last few into the result."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)
        if len(self.lines) > 200:
            del self.lines[:100]

    def tail(self) -> str:
        return "\n".join(self.lines)[-LOG_TAIL_CHARS:]


def warm_kernels(device: torch.device, precision: str) -> list[str]:
    """Compile or load the model's fused kernels for this precision's activation dtypes (kernels.warm)."""
    dtypes = (torch.float32, torch.bfloat16) if precision == "bf16" else (torch.float32,)
    return kernels.warm(device, dtypes, width=WIDTH, heads=HEADS, inner=SWIGLU_INNER, eps=NORM_EPS)


def evaluate(args: argparse.Namespace, device: torch.device, log: LogTail) -> dict:
    """Everything after the arguments are parsed; raises only for the statuses main() maps."""
    t0 = time.monotonic()
    profile = get_profile(args.profile)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(profile.seeds)
    path = Path(args.candidate)
    code = path.read_text() if args.model == "delta_net" else ""
    base = {"model": args.model, "profile": profile.name, "seeds": seeds,
            "candidate_sha256": hashlib.sha256(code.encode()).hexdigest() if code else ""}
    runs = profile.runs(seeds)
    if args.tasks:
        wanted = set(args.tasks.split(","))
        runs = [r for r in runs if r.setting.task in wanted]
    if args.only:
        wanted = set(args.only.split(","))
        runs = [r for r in runs if f"{r.setting.task}/{r.setting.name}" in wanted]
    budget = profile.budget()
    if args.max_steps is not None:
        budget = dataclasses.replace(budget, max_steps=args.max_steps or None)
    # the first group's data is generated on a host thread while the kernels load and the checks run
    first_data = None if args.checks_only else prefetch_first_group(runs, budget, batched=args.mode == "batched")
    t_kernels = time.monotonic()
    kernels.set_enabled(not args.no_kernels)
    try:        # compiled now: the guard forbids the compiler's subprocesses
        fused = warm_kernels(device, args.precision)
        kernels_fallback = ""
    except Exception as e:                    # a GPU or triton the kernels do not support: the torch ops
        fused, kernels_fallback = [], f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
        kernels.set_enabled(False)
        log(f"fused kernels unavailable, using the torch ops ({kernels_fallback})")
    kernels.freeze()
    kernels_s = time.monotonic() - t_kernels
    if fused:
        log(f"fused kernels ready in {kernels_s:.1f} s: {', '.join(fused)}")
    if args.deterministic:
        deterministic_ops(device)   # for the checks too (a candidate's own scatter-adds become repeatable)
    guard.harden_process()
    torch.manual_seed(0)        # the global generators as the candidate finds them: the same however the worker
    checks, core = [], None     # started (a spare ran code ahead) and whatever the kernels' warm-up drew
    t_checks = time.monotonic()
    if args.model == "delta_net":
        for c in check_static(code):
            checks.append(c.as_dict())
            if not c.passed:
                return failure("invalid", c.reason, c.message, checks=checks, **base,
                               timings={"checks_s": time.monotonic() - t_checks})
        try:
            core = guard.load_candidate(path)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            checks.append({"name": "load", "passed": False, "reason": "load",
                           "message": f"load: importing the candidate raised {type(e).__name__}: {first}",
                           "seconds": 0.0})
            return failure("invalid", "load", checks[-1]["message"], checks=checks, **base,
                           timings={"checks_s": time.monotonic() - t_checks})
        for finding in run_dynamic_checks(core, device.type):
            checks.append(finding)
            log(f"check {finding['name']}: {'ok' if finding['passed'] else finding['message']}")
            if not finding["passed"]:
                return failure("invalid", finding["reason"], finding["message"], checks=checks, **base,
                               timings={"checks_s": time.monotonic() - t_checks})
    elif args.model == "gated_delta_net":
        from sandbox.gated import gated_delta_rule_chunkwise as core
    checks_s = time.monotonic() - t_checks
    if args.checks_only:
        log(f"checks only: all {len(checks)} passed")
        return {"status": "ok", "reason": "", "message": "", **base, "scores": {}, "whole_set_accuracy": {},
                "token_accuracy": {}, "mean": 0.0, "std": 0.0, "settings": [], "checks": checks,
                "timings": {"total_s": round(time.monotonic() - t0, 3), "checks_s": round(checks_s, 3)},
                "execution": {"device": device.type, "checks_only": True}, "environment": {}, "log_tail": ""}
    log(f"training {len(runs)} run(s) of profile {profile.name} ({args.model}, {args.mode}, "
        f"{'eager' if args.no_graphs else 'cuda graphs where possible'}, "
        f"{args.precision if device.type == 'cuda' else 'fp32'}) on {device}")
    outcomes, execution = train_runs(runs, args.model, core, budget, device,
                                     batched=args.mode == "batched", cuda_graphs=not args.no_graphs,
                                     precision=args.precision, deterministic=args.deterministic, log=log,
                                     first_data=first_data)
    summary = summarize(outcomes, seeds)
    for name in execution.timings:
        execution.timings[name] = round(execution.timings[name], 3)
    result = {"status": "ok", "reason": "", "message": "", **base, **summary, "checks": checks,
              "timings": {"total_s": round(time.monotonic() - t0, 3), "checks_s": round(checks_s, 3),
                          "kernels_s": round(kernels_s, 3), **execution.timings},
              "execution": {"device": execution.device, "mode": args.mode, "batched": execution.batched,
                            "cuda_graphs": execution.cuda_graphs, "fallback_reason": execution.fallback_reason,
                            "precision": execution.precision, "deterministic": execution.deterministic,
                            "max_steps": budget.max_steps,
                            "kernels": fused, "kernels_fallback": kernels_fallback,
                            "matmul_precision": torch.get_float32_matmul_precision(),
                            "groups": execution.groups, "runs": len(runs)}}
    log(f"done: mean {result['mean']:.4f} over {len(summary['scores'])} task(s) in {result['timings']['total_s']:.1f} s")
    return result


def prewarm(device: torch.device, what: str) -> None:
    """Run trusted code ahead of the job so that its first calls find the libraries started and the kernels
    loaded: the baseline delta rule (what candidates are made from) and, for "step", a tiny graphed training.
    Explicitly seeded throughout; evaluate() resets the global seeds before the candidate runs anyway."""
    if what == "none":
        return
    from sandbox import naive, tasks
    from sandbox.dynamic_checks import inputs
    from sandbox.train import GRAPH_WARMUP_STEPS, Budget, Run
    q, k, v, beta = inputs(2, HEADS, 64, WIDTH // HEADS, WIDTH // HEADS, device, grad=True)
    o, S = naive.delta_rule_chunkwise(q, k, v, beta)
    (o.sum() + S.sum()).backward()
    if what == "step":
        steps = GRAPH_WARMUP_STEPS + 2                 # eager warm-up, the capture, one replay
        setting = tasks.baseline_setting("context_recall").replace(num_train_examples=8 * steps, num_test_examples=16)
        budget = Budget(batch_size=8, max_epochs=1, valid_size=16, test_size=16, eval_batch=16)
        train_runs([Run(setting, 0, 1e-3, 0.0)], "delta_net", naive.delta_rule_chunkwise, budget, device,
                   log=lambda line: None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def wait_for_job(spare: argparse.Namespace) -> argparse.Namespace | None:
    """A spare worker's start: everything that does not depend on the job (imports, CUDA, the fused kernels)
    done ahead, then the job's `eval` arguments read from stdin; None when stdin closes first (the spare was
    not needed). Failures here are left for the job's own run to meet and report."""
    t0 = time.monotonic()
    try:
        device = resolve_device(spare.device)
        if device.type == "cuda":
            torch.cuda.init()
        warm_kernels(device, spare.precision)
        prewarm(device, spare.prewarm)
    except Exception as e:
        print(f"spare worker: {type(e).__name__} while starting ahead; the job will meet it again", flush=True)
    ready_s = time.monotonic() - t0
    print(f"{SPARE_READY} in {ready_s:.1f} s after its imports; waiting for a job", flush=True)
    t_wait = time.monotonic()
    line = sys.stdin.readline()
    if not line.strip():
        return None
    devnull = os.open(os.devnull, os.O_RDONLY)     # nothing more comes from the controller
    os.dup2(devnull, 0)
    os.close(devnull)
    argv = json.loads(line)
    if not (isinstance(argv, list) and argv[:1] == ["eval"] and all(isinstance(a, str) for a in argv)):
        raise SystemExit(f"spare worker: expected a JSON list of `eval` arguments on stdin, got {line[:200]!r}")
    args = parse_args(argv)
    if args.device != spare.device:
        raise SystemExit(f"spare worker: started for --device {spare.device}, the job asks for {args.device}")
    args.spare = {"ready_s": round(ready_s, 3), "waited_s": round(time.monotonic() - t_wait, 3)}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "spare":
        args = wait_for_job(args)
        if args is None:
            return 0
    sink = os.fdopen(args.result_fd, "w") if args.result_fd is not None else None
    out = open(args.out, "w") if args.out else None     # opened before hardening, written at the end
    log = LogTail()
    t0 = time.monotonic()
    env: dict = {}
    try:
        device = resolve_device(args.device)
        env = environment(device)
        if device.type == "cuda":
            torch.cuda.init()
        result = evaluate(args, device, log)
    except NonFiniteLoss as e:
        result = failure("nan", "non_finite_loss", str(e))
    except Exception as e:
        tb = traceback.format_exc()
        log(tb)
        if is_out_of_memory(e):
            result = failure("oom", "out_of_memory", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}")
        else:
            last = (str(e).strip().splitlines() or [""])[0][:300]
            result = failure("crashed", "exception", f"{type(e).__name__}: {last}")
    result["environment"] = env
    if getattr(args, "spare", None):
        result.setdefault("execution", {})["spare"] = args.spare
    result["log_tail"] = log.tail()
    result.setdefault("timings", {}).setdefault("total_s", round(time.monotonic() - t0, 3))
    for key in ("model", "profile"):
        result[key] = result.get(key) or getattr(args, key)
    if not result.get("seeds") and args.seeds:
        result["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip().lstrip("-").isdigit()]
    text = json.dumps(result, default=float)
    for stream in (sink, out):
        if stream is not None:
            stream.write(text)
            stream.close()
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
