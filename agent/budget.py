"""What one `archer run` may spend (candidates, LLM tokens, money, wall time) and what it has spent.

Limits come from config.budget, overridden by the command line; each counts from the start of the
run. The loop asks `exhausted()` before it starts a new candidate, so the work in flight finishes.
Tested by tests/test_loop_budget.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from agent.config import BudgetConfig
from agent.records import Usage


@dataclass
class Budget:
    limits: BudgetConfig
    candidates: int = 0
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def add(self, usage: Usage, *, recorded: int = 0) -> None:
        self.calls += usage.calls
        self.tokens += usage.prompt_tokens + usage.completion_tokens
        self.cost_usd += usage.cost_usd
        self.candidates += recorded

    @property
    def hours(self) -> float:
        return (time.monotonic() - self.started) / 3600

    def exhausted(self) -> str | None:
        """The first limit reached, as "candidates 3/3", or None while all remain."""
        lim = self.limits
        if lim.candidates is not None and self.candidates >= lim.candidates:
            return f"candidates {self.candidates}/{lim.candidates}"
        if lim.tokens is not None and self.tokens >= lim.tokens:
            return f"tokens {self.tokens}/{lim.tokens}"
        if lim.cost_usd is not None and self.cost_usd >= lim.cost_usd:
            return f"cost ${self.cost_usd:.4f}/${lim.cost_usd:.4f}"
        if lim.wall_hours is not None and self.hours >= lim.wall_hours:
            return f"wall time {self.hours:.2f}/{lim.wall_hours:.2f} h"
        return None

    def as_dict(self) -> dict:
        return {"candidates": self.candidates, "calls": self.calls, "tokens": self.tokens,
                "cost_usd": round(self.cost_usd, 6), "hours": round(self.hours, 4),
                "limits": self.limits.model_dump()}

    def summary(self) -> str:
        """One line: "3/10 candidates · 1,234 tokens · $0.0100 · 0.20 h" (limits shown where set)."""
        lim = self.limits
        parts = [f"{self.candidates}" + (f"/{lim.candidates}" if lim.candidates is not None else "") + " candidates"]
        if self.tokens or lim.tokens is not None:
            parts.append(f"{self.tokens:,}" + (f"/{lim.tokens:,}" if lim.tokens is not None else "") + " tokens")
        if self.cost_usd or lim.cost_usd is not None:
            parts.append(f"${self.cost_usd:.4f}" + (f"/${lim.cost_usd:.2f}" if lim.cost_usd is not None else ""))
        parts.append(f"{self.hours:.2f}" + (f"/{lim.wall_hours:.2f}" if lim.wall_hours is not None else "") + " h")
        return " · ".join(parts)
