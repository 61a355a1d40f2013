"""Budgets: each limit stops the run once reached, counted from the run's start; the summary names them."""
import pytest

from agent.budget import Budget
from agent.config import BudgetConfig
from agent.records import Usage


def test_nothing_is_exhausted_without_limits():
    b = Budget(BudgetConfig())
    b.add(Usage(calls=9, prompt_tokens=10**6, completion_tokens=10**6, cost_usd=100.0), recorded=1000)
    assert b.exhausted() is None


@pytest.mark.parametrize("limits, usage, recorded, expected", [
    (BudgetConfig(candidates=2), Usage(), 2, "candidates 2/2"),
    (BudgetConfig(tokens=1000), Usage(prompt_tokens=700, completion_tokens=300), 0, "tokens 1000/1000"),
    (BudgetConfig(cost_usd=0.5), Usage(cost_usd=0.5), 0, "cost $0.5000/$0.5000"),
    (BudgetConfig(wall_hours=0.0), Usage(), 0, "wall time 0.00/0.00 h"),
])
def test_each_limit_stops_once_reached(limits, usage, recorded, expected):
    b = Budget(limits)
    b.add(usage, recorded=recorded)
    assert b.exhausted() == expected


def test_limits_not_yet_reached_leave_the_run_going():
    b = Budget(BudgetConfig(candidates=3, tokens=1000, cost_usd=1.0, wall_hours=1.0))
    b.add(Usage(calls=1, prompt_tokens=400, completion_tokens=100, cost_usd=0.2), recorded=2)
    assert b.exhausted() is None
    assert b.summary().startswith("2/3 candidates · 500/1,000 tokens · $0.2000/$1.00 · 0.00/1.00 h")
    assert b.as_dict()["calls"] == 1 and b.as_dict()["limits"]["candidates"] == 3
