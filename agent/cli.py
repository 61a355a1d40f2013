"""The `archer` command: a thin typer layer over the library; errors become one line here only.

Every command's body calls into the module that owns the stage. Tested by tests/test_cli.py
(every command has help; errors are one line with a non-zero exit).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from agent.errors import ArcherError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Autonomous architecture search for linear-attention token mixers on the MAD tasks.")
console = Console()
DEFAULT_DIR = Path("history")


@app.callback()
def root() -> None:
    """archer: propose, check, train and record delta-rule variants; review, replay and revert them."""


@app.command("eval")
def eval_cmd(
    file: Path = typer.Argument(..., help="the naive.py to score"),
    profile: str = typer.Option("smoke", help="smoke | quick | screen | mad"),
    model: str = typer.Option("delta_net", help="delta_net | gated_delta_net | transformer"),
    seeds: str = typer.Option("0", help="comma-separated seeds"),
    out: Optional[Path] = typer.Option(None, help="write the result JSON here"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    timeout: float = typer.Option(3600.0, help="wall-clock limit in seconds"),
    tasks: Optional[str] = typer.Option(None, help="comma-separated subset of the six tasks"),
    precision: str = typer.Option("fp32", help="fp32 | bf16: MAD's bf16 mixed precision on CUDA (the candidate "
                                               "stays float32); the CPU always trains in float32"),
    deterministic: bool = typer.Option(False, "--deterministic",
                                       help="on CUDA, every op deterministic: a second run repeats bit for bit "
                                            "(H100: 6-7% slower steps with torch's NaN-filling of new tensors, "
                                            "which archer leaves off); the CPU always repeats"),
):
    """Score one naive.py without the loop: checks, then training on the profile's MAD settings."""
    from agent.config import EvalConfig
    from agent.evaluate import evaluate_code, failure_line, result_table, timing_line
    from sandbox.profiles import PROFILES
    from sandbox.result import MODELS, TASKS

    if not file.is_file():
        raise ArcherError(f"{file}: no such file")
    if profile not in PROFILES:
        raise ArcherError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if model not in MODELS:
        raise ArcherError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    if device not in ("auto", "cpu", "cuda"):
        raise ArcherError(f"unknown device {device!r}; expected auto, cpu or cuda")
    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        raise ArcherError(f"--seeds {seeds!r}: expected comma-separated integers such as 0,1,2") from None
    if precision not in ("fp32", "bf16"):
        raise ArcherError(f"unknown precision {precision!r}; expected fp32 or bf16")
    task_list = tasks.split(",") if tasks else None
    unknown = sorted(set(task_list or ()) - set(TASKS))
    if unknown:
        raise ArcherError(f"unknown task(s) {', '.join(unknown)}; expected some of {', '.join(TASKS)}")
    config = EvalConfig(profile=profile, seeds=seed_list, model=model, device=device, timeout_s=timeout,
                        deterministic=deterministic)
    with console.status(f"evaluating {file} ({model}, profile {profile}, seeds {seeds}) in an isolated worker"):
        result = evaluate_code(file.read_text(), config, tasks=task_list, precision=precision)
    if out:
        out.write_text(result.model_dump_json(indent=1))
    if result.status != "ok":
        console.print(failure_line(result), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(result_table(result))
    console.print(timing_line(result), highlight=False, markup=False, soft_wrap=True)


@app.command("run")
def run_cmd(
    directory: Path = typer.Argument(DEFAULT_DIR, help="the workspace (created with the defaults when missing)"),
    budget: Optional[int] = typer.Option(None, "--budget", "-n", help="stop after this many new candidates"),
    max_tokens: Optional[int] = typer.Option(None, help="stop once the LLM calls used this many tokens"),
    max_cost: Optional[float] = typer.Option(None, help="stop once the LLM calls cost this many USD"),
    max_hours: Optional[float] = typer.Option(None, help="stop starting new candidates after this many hours"),
    profile: Optional[str] = typer.Option(None, help="smoke | quick | screen | mad | auto (saved in archer.toml)"),
    proposer: Optional[str] = typer.Option(None, help="mutate | llm (saved in archer.toml)"),
    executor: Optional[str] = typer.Option(None, help="local | ray: where evaluations run (saved in archer.toml)"),
    address: Optional[str] = typer.Option(None, help="the Ray cluster: auto, or ray://HEAD:10001 (saved)"),
    gpus: Optional[str] = typer.Option(None, help="local GPUs to use, e.g. 0,1, or all (saved; default all)"),
):
    """Search: propose, check, evaluate and record candidates until a budget is spent or Ctrl-C / SIGTERM.

    Running it again resumes exactly where it stopped. Limits not given here come from the budget section of archer.toml.
    """
    from agent.config import BudgetConfig
    from agent.executor import executor_overrides
    from agent.runner import run_search

    overrides = BudgetConfig(candidates=budget, tokens=max_tokens, cost_usd=max_cost, wall_hours=max_hours)
    summary = run_search(directory, overrides=overrides, profile=profile, proposer=proposer, console=console,
                         executor=executor_overrides(executor, address, gpus))
    console.print(f"recorded {len(summary.recorded)} candidate{'s' if len(summary.recorded) != 1 else ''}; "
                  f"{summary.stopped}", highlight=False)
    if summary.signal is not None:
        raise typer.Exit(128 + summary.signal)


@app.command("report")
def report_cmd(
    directory: Path = typer.Argument(DEFAULT_DIR, help="the workspace"),
    out: Path = typer.Option(Path("site"), "--out", "-o", help="the site folder (created; an archer site is updated)"),
    serve: bool = typer.Option(False, "--serve", help="then serve the site on 127.0.0.1 until Ctrl-C"),
    port: int = typer.Option(8000, help="port for --serve (0: any free port)"),
):
    """A static HTML site of the search: leaderboard, plots, lineage tree, each candidate's report, code and diff.

    It opens from disk with no network (OUT/index.html); rebuilding renders only the pages that changed.
    """
    import shlex

    from rich.progress import Progress

    from agent.site import build_site, load_workspace, serve_site

    entries = load_workspace(directory)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("writing candidate pages", total=len(entries))
        summary = build_site(entries, out, title=f"archer · {directory.resolve().name}", workspace=str(directory),
                             workspace_option="" if directory == DEFAULT_DIR else f"--dir {shlex.quote(str(directory))}",
                             progress=lambda done, total: bar.update(task, completed=done))
    console.print(f"wrote {summary.pages} pages ({summary.bytes / 1e6:.1f} MB) to {out} in {summary.seconds:.1f} s; "
                  f"open {(out / 'index.html').resolve()}", highlight=False, soft_wrap=True)
    if serve:
        try:
            server = serve_site(out, port)
        except OSError as e:
            raise ArcherError(f"cannot serve on 127.0.0.1:{port}: {e.strerror or e}") from None
        console.print(f"serving http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", highlight=False,
                      soft_wrap=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def _open(directory: Path):
    from agent.history import Workspace
    ws = Workspace.open(directory)
    for fixed in ws.repairs:
        console.print(f"[yellow]repaired:[/yellow] {fixed}", highlight=False)
    return ws


@app.command("init")
def init_cmd(
    directory: Path = typer.Argument(DEFAULT_DIR, help="the new workspace folder"),
    config: Optional[Path] = typer.Option(None, help="start from this archer.toml instead of the defaults"),
):
    """Create a search workspace: a git repository with archer.toml, results.csv and the baseline as 0000."""
    from agent.config import load_config
    from agent.history import Workspace

    ws = Workspace.init(directory, load_config(config) if config else None)
    console.print(f"created {ws.path} with candidate 0000 baseline (pending: `archer run {directory}` "
                  f"evaluates it first)", highlight=False)


@app.command("log")
def log_cmd(
    directory: Path = typer.Argument(DEFAULT_DIR, help="the workspace"),
    status: Optional[list[str]] = typer.Option(None, "--status", "-s", help="only these statuses (repeatable)"),
    proposer: Optional[str] = typer.Option(None, help="only proposers starting with this (mutate, llm, replay...)"),
    min_mean: Optional[float] = typer.Option(None, help="only candidates with at least this mean"),
    sort: str = typer.Option("id", help="id | mean | a task (compress, memorize, 'fuzzy recall'...)"),
    desc: Optional[bool] = typer.Option(None, "--desc/--asc", help="order (default: id ascending, scores descending)"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="show at most this many rows (latest or best)"),
    plain: Optional[bool] = typer.Option(None, "--plain/--rich", help="plain text (default when piped) or a table"),
):
    """The results table in search order: per-task scores, mean, spread, difference from parent, status."""
    from agent.review import log_view

    view = log_view(_open(directory), status=status, proposer=proposer, min_mean=min_mean, sort=sort,
                    descending=desc, limit=limit, plain=not sys.stdout.isatty() if plain is None else plain)
    console.print(view, soft_wrap=True)


@app.command("show")
def show_cmd(
    n: int = typer.Argument(..., help="the candidate id"),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help="the workspace"),
    diff: bool = typer.Option(True, "--diff/--no-diff", help="show the diff against the parent"),
    report: bool = typer.Option(True, "--report/--no-report", help="show the insight report"),
):
    """One candidate: its facts, scores with uncertainty against its parent, the report and the diff."""
    from agent.review import show_view

    console.print(show_view(_open(directory), n, diff=diff, report=report))


@app.command("diff")
def diff_cmd(
    n: int = typer.Argument(..., help="the candidate id"),
    m: Optional[int] = typer.Argument(None, help="compare with this candidate (default: N's parent)"),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help="the workspace"),
):
    """The unified diff of naive.py from M (default: N's parent) to N."""
    from agent.review import diff_text

    text = diff_text(_open(directory), n, m)
    if sys.stdout.isatty():
        from rich.syntax import Syntax
        console.print(Syntax(text or "(identical)", "diff"))
    else:
        sys.stdout.write(text)


@app.command("status")
def status_cmd(directory: Path = typer.Argument(DEFAULT_DIR, help="the workspace")):
    """What runs now (the loop's run.json and the journal), budgets used, and the best candidate so far."""
    from agent.review import status_view

    console.print(status_view(_open(directory)))


@app.command("replay")
def replay_cmd(
    n: int = typer.Argument(..., help="the candidate to re-run"),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help="the workspace"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated seeds (default: N's seeds: does it reproduce?)"),
    profile: Optional[str] = typer.Option(None, help="another profile (default: N's): does it hold?"),
    onto: Optional[int] = typer.Option(None, help="re-apply N's change on top of this candidate (three-way merge)"),
):
    """Re-run candidate N (or its change onto another) and record the outcome as a new linked candidate."""
    from agent.replay import parse_seeds, replay

    ws = _open(directory)
    with console.status(f"evaluating a replay of {n:04d}" + (f" onto {onto:04d}" if onto is not None else "")):
        cand = replay(ws, n, seeds=parse_seeds(seeds), profile=profile, onto=onto)
    console.print(ws.repo.head.commit.summary, highlight=False)
    if cand.status != "ok":
        raise typer.Exit(2)


@app.command("revert")
def revert_cmd(
    n: int = typer.Argument(..., help="the candidate to revert"),
    reason: str = typer.Option(..., "--reason", "-r", help="why (kept in the history)"),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help="the workspace"),
):
    """Undo candidate N with a git revert: it leaves the table and the pool of parents; history keeps both."""
    ws = _open(directory)
    ws.revert(n, reason)
    console.print(ws.repo.head.commit.summary, highlight=False)


@app.command("import")
def import_cmd(
    logs: list[Path] = typer.Argument(..., help="log files of the earlier pipeline"),
    into: Path = typer.Option(..., "--into", help="the new workspace folder"),
):
    """Read the earlier pipeline's logs (results tables, insights, names) into a new workspace."""
    from agent.legacy import import_logs

    ws, plan = import_logs(logs, into)
    for problem in plan.problems:
        console.print(f"[yellow]could not read:[/yellow] {problem}", highlight=False)
    console.print(f"imported {len(ws.ids())} candidates and {len(plan.references)} reference models into {into}",
                  highlight=False)


def main() -> None:
    try:
        app()
    except ArcherError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
