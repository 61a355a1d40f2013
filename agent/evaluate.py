"""The controller's one way to score code: run the isolated worker and parse its result.

The loop receives `evaluate_code` as an injected callable, so the search policy knows nothing
about subprocesses; `failure_line` and `result_table` are how a person sees a result (`archer eval`).
Tested by tests/test_evaluate.py and tests/test_eval_cli.py.
"""
from __future__ import annotations

from rich.table import Table

from agent.config import EvalConfig
from agent.records import EvalResult
from agent.slots import Job
from sandbox.isolation import run_isolated
from sandbox.result import TASK_TITLES, TASKS


def resolve_profile(profile: str) -> str:
    """"auto" (EvalConfig's default): screen where CUDA is available, smoke where it is not."""
    if profile != "auto":
        return profile
    import torch
    return "screen" if torch.cuda.is_available() else "smoke"


def evaluate_code(code: str, config: EvalConfig, *, seeds: list[int] | None = None,
                  profile: str | None = None, tasks: list[str] | None = None,
                  precision: str = "fp32") -> EvalResult:
    """Score `code` in a fresh worker; `tasks` limits the profile to some of the six tasks."""
    kwargs = Job.of("eval", code, config, profile=resolve_profile(profile or config.profile),
                    seeds=seeds).isolated_kwargs()
    kwargs["extra_args"] += (("--tasks", ",".join(tasks)) if tasks else ()) + ("--precision", precision)
    memory_mb = int(config.memory_gb * 1024) if config.device == "cpu" else None
    raw = run_isolated(code, memory_mb=memory_mb, **kwargs)
    return EvalResult.model_validate(raw)


def failure_line(result: EvalResult) -> str:
    """One line: status, the failed check (or the reason code), and why."""
    failed = [c for c in result.checks if not c.passed]
    what = failed[-1].name if result.status == "invalid" and failed else result.reason
    message = result.message
    if what and message.startswith(f"{what}:"):
        message = message[len(what) + 1:].strip()
    return f"{result.status}: {what}: {message}" if what else f"{result.status}: {message}"


def _cell(score) -> str:
    return f"{score.mean:.3f} ± {score.std:.3f}" if len(score.per_seed) > 1 else f"{score.mean:.3f}"


def result_table(result: EvalResult) -> Table:
    """Per task: MAD accuracy mean ± std over seeds, each seed, token accuracy; the six-task mean last."""
    table = Table(title=f"{result.model} on `{result.profile}`, seeds {', '.join(map(str, result.seeds))}")
    table.add_column("task")
    table.add_column("accuracy", justify="right")
    table.add_column("per seed", justify="right")
    table.add_column("token acc.", justify="right")
    for task in TASKS:
        if task not in result.scores:
            continue
        s = result.scores[task]
        tok = result.token_accuracy.get(task)
        table.add_row(TASK_TITLES[task], _cell(s), " ".join(f"{v:.3f}" for v in s.per_seed),
                      _cell(tok) if tok else "")
    mean = f"{result.mean:.3f} ± {result.std:.3f}" if len(result.seeds) > 1 else f"{result.mean:.3f}"
    table.add_row("mean", mean, "", "", style="bold")
    return table


def timing_line(result: EvalResult) -> str:
    t, ex = result.timings, result.execution
    parts = [f"{k.removesuffix('_s')} {v:.1f}s" for k, v in t.items() if k != "total_s"]
    mode = f"{ex.get('device', '?')}, {ex.get('mode', '?')}, cuda graphs {'on' if ex.get('cuda_graphs') else 'off'}"
    if ex.get("fallback_reason"):
        mode += f" (fell back to eager: {ex['fallback_reason']})"
    if ex.get("precision"):
        mode += f", {ex['precision']}"
    return f"total {t.get('total_s', 0.0):.1f}s ({', '.join(parts)}); {mode}, {len(ex.get('groups', []))} group(s)"
