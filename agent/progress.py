"""What a running search shows: a live view, the log file <ws>/.archer/run.log, and run.json.

run.json (pid, started_at, stage, candidate, budget used, best) is what `archer status` reads.
The loop calls `stage`, `note` and `recorded`; nothing here decides anything.
Tested by tests/test_loop.py (log and run.json contents) and tests/test_run_e2e.py.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.budget import Budget
from agent.journal import write_atomic
from agent.records import Candidate

STAGES = ("select", "propose", "check", "evaluate", "record")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Progress:
    """The live view and the log of one `archer run`; use as a context manager."""

    def __init__(self, state_dir: Path, budget: Budget, *, console: Console | None = None,
                 live: bool | None = None, title: str = "archer run"):
        self.state_dir = Path(state_dir)
        self.budget = budget
        self.console = console or Console(stderr=True)
        self.live_enabled = self.console.is_terminal if live is None else live
        self.title = title
        self.started_at = _now()
        self.candidate: tuple[int, str, int | None] | None = None
        self.stage_name = "start"
        self.stage_since = time.monotonic()
        self.best: Candidate | None = None
        self.last: str = ""
        self._live: Live | None = None
        self._log = None

    def __enter__(self) -> "Progress":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.state_dir / "run.log", "a", encoding="utf-8")
        if self.live_enabled:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False,
                              get_renderable=self._render)
            self._live.start()
        self._write_state()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def note(self, text: str, *, style: str = "") -> None:
        """One line for the log file and the console."""
        if self._log is not None:
            self._log.write(f"{_now()} {text}\n")
            self._log.flush()
        self.console.print(Text(text, style=style), highlight=False)

    def stage(self, stage: str, cand_id: int | None = None, name: str = "", parent: int | None = None) -> None:
        if cand_id is not None:
            self.candidate = (cand_id, name, parent)
        self.stage_name = stage
        self.stage_since = time.monotonic()
        if self._log is not None and cand_id is not None:
            self._log.write(f"{_now()} {cand_id:04d} {stage}{' ' + name if name else ''}\n")
            self._log.flush()
        self._write_state()

    def recorded(self, cand: Candidate, summary: str, best: Candidate | None) -> None:
        self.best = best
        self.last = summary
        colour = "green" if cand.status == "ok" else "yellow" if cand.status == "rejected" else "red"
        self.note(summary, style=colour)
        self._write_state()

    def finished(self, reason: str) -> None:
        self.stage_name = "stopped"
        self.candidate = None
        self.note(f"stopped: {reason}", style="bold")
        self._write_state(stopped=reason)

    def _write_state(self, stopped: str | None = None) -> None:
        cand = None if self.candidate is None else \
            {"id": self.candidate[0], "name": self.candidate[1], "parent": self.candidate[2]}
        state = {"pid": os.getpid(), "started_at": self.started_at, "updated_at": _now(),
                 "stage": self.stage_name, "candidate": cand, "budget": self.budget.as_dict(),
                 "best": None if self.best is None else {"id": self.best.id, "name": self.best.name,
                                                          "mean": self.best.mean},
                 "stopped": stopped}
        write_atomic(self.state_dir / "run.json", json.dumps(state, indent=1) + "\n")

    def _render(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.title = self.title
        grid.add_column(style="bold")
        grid.add_column()
        if self.candidate is not None:
            cid, name, parent = self.candidate
            text = f"{cid:04d} {name}".rstrip() + (f"  (parent {parent:04d})" if parent is not None else "")
            grid.add_row("candidate", text)
        stages = Text()
        for i, s in enumerate(STAGES):
            stages.append(" → " if i else "")
            stages.append(s, style="bold reverse" if s == self.stage_name else "dim")
        stages.append(f"   {time.monotonic() - self.stage_since:.0f} s", style="dim")
        grid.add_row("stage", stages)
        if self.best is not None:
            grid.add_row("best", f"{self.best.id:04d} {self.best.name}  mean {self.best.mean:.3f}")
        grid.add_row("budget", self.budget.summary())
        if self.last:
            grid.add_row("last", self.last)
        return grid
