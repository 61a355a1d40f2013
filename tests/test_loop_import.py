"""A search continued from an imported log builds only on candidates that have code."""
from pathlib import Path

from agent.budget import Budget
from agent.config import BudgetConfig
from agent.legacy import import_logs
from agent.loop import Search
from agent.mutate import MutateProposer
from agent.progress import Progress
from loop_support import fake_evaluate

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"


def test_search_continued_from_an_import_never_builds_on_codeless_rows(tmp_path):
    ws, _ = import_logs([FIXTURES / "01_standard.log"], tmp_path / "ws")
    codeless = {c.id for c in ws.records() if not ws.has_code(c.id)}
    assert codeless, "the fixtures import rows without code"
    budget = Budget(BudgetConfig(candidates=4))
    with Progress(ws.path / ".archer", budget, live=False) as progress:
        Search(ws, MutateProposer(seed=0), fake_evaluate, budget=budget, progress=progress).run()
    new = [c for c in ws.records() if c.proposer == "mutate"]
    assert len(new) == 4
    assert not {c.parent for c in new} & codeless
