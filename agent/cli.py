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
):
    """Score one naive.py without the loop: checks, then training on the profile's MAD settings."""
    raise ArcherError("eval: not built yet")


@app.command("run")
def run_cmd(
    directory: Path = typer.Argument(DEFAULT_DIR, help="the workspace (created with the defaults when missing)"),
    budget: Optional[int] = typer.Option(None, "--budget", "-n", help="stop after this many new candidates"),
    max_tokens: Optional[int] = typer.Option(None, help="stop once the LLM calls used this many tokens"),
    max_cost: Optional[float] = typer.Option(None, help="stop once the LLM calls cost this many USD"),
    max_hours: Optional[float] = typer.Option(None, help="stop starting new candidates after this many hours"),
    profile: Optional[str] = typer.Option(None, help="smoke | quick | screen | mad | auto (saved in archer.toml)"),
    proposer: Optional[str] = typer.Option(None, help="mutate | llm (saved in archer.toml)"),
):
    """Search: propose, check, evaluate and record candidates until a budget is spent or Ctrl-C / SIGTERM.

    Running it again resumes exactly where it stopped. Limits not given here come from archer.toml [budget].
    """
    from agent.config import BudgetConfig
    from agent.loop import run_search

    overrides = BudgetConfig(candidates=budget, tokens=max_tokens, cost_usd=max_cost, wall_hours=max_hours)
    summary = run_search(directory, overrides=overrides, profile=profile, proposer=proposer, console=console)
    console.print(f"recorded {len(summary.recorded)} candidate{'s' if len(summary.recorded) != 1 else ''}; "
                  f"{summary.stopped}", highlight=False)
    if summary.signal is not None:
        raise typer.Exit(128 + summary.signal)


def main() -> None:
    try:
        app()
    except ArcherError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(1)
