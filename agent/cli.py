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


def main() -> None:
    try:
        app()
    except ArcherError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(1)
