"""Setting up one `archer run`: the workspace (created when missing), its profile, the proposer, a lock,
the progress view, and the loop that fits the executor (agent/loop.py, or agent/pipeline.py for GPUs,
a cascade or Ray). Tested by tests/test_loop.py and tests/test_run_e2e.py.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.budget import Budget
from agent.config import BudgetConfig, ExecutorConfig
from agent.errors import WorkspaceError
from agent.evaluate import evaluate_code, resolve_profile
from agent.executor import wants_pipeline
from agent.history import Workspace
from agent.loop import Evaluate, RunSummary, Search
from agent.progress import Progress


def make_proposer(ws: Workspace):
    """(proposer, kind): the LLM proposer when endpoints are configured for it, else mutate."""
    config = ws.config
    if config.proposer.kind == "llm" and config.proposer.endpoints:
        from agent.llm_proposer import LLMProposer
        return LLMProposer.from_history(config.proposer, ws.records(), seed=config.seed), "llm"
    from agent.mutate import MutateProposer
    return MutateProposer(seed=config.seed, max_mutations=config.proposer.max_mutations), "mutate"


@contextmanager
def run_lock(ws: Workspace) -> Iterator[None]:
    """One `archer run` per workspace at a time (a flock the kernel drops if the process dies)."""
    path = ws.path / ".archer" / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise WorkspaceError(f"{ws.path}: another `archer run` (pid {pid}) is running on this workspace") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_workspace(path: Path, *, profile: str | None = None, proposer: str | None = None,
                   executor: ExecutorConfig | None = None) -> Workspace:
    """The workspace at `path` (created when missing), its profile resolved and saved in archer.toml.

    `executor` holds the fields of [executor] given on the command line (the others are None)."""
    ws = Workspace.open(path) if (path / "archer.toml").exists() else Workspace.init(path)
    config = ws.config
    updated = config.model_copy(deep=True)
    updated.eval.profile = resolve_profile(profile or config.eval.profile)
    if proposer is not None:
        updated.proposer.kind = proposer
    if executor is not None:
        updated.executor = updated.executor.model_copy(update=executor.model_dump(exclude_unset=True))
    if updated != config:
        ws.save_config(updated)
    return ws


def run_search(path: Path, *, overrides: BudgetConfig = BudgetConfig(), profile: str | None = None,
               proposer: str | None = None, evaluate: Evaluate | None = None, console=None,
               live: bool | None = None, executor: ExecutorConfig | None = None) -> RunSummary:
    """`archer run`: open (or create) the workspace, then search until a limit or a signal stops it.

    Limits set in `overrides` replace those of archer.toml's budget section for this run. Without an injected
    `evaluate`, a run with GPUs, a cascade or Ray goes through agent/pipeline.py's parallel loop."""
    ws = open_workspace(Path(path), profile=profile, proposer=proposer, executor=executor)
    given = overrides.model_dump(exclude_none=True)
    limits = ws.config.budget.model_copy(update=given)
    with run_lock(ws):
        prop, kind = make_proposer(ws)
        pipelined = evaluate is None and wants_pipeline(ws.config)
        if evaluate is None and not pipelined:
            eval_config = ws.config.eval
            evaluate = lambda code: evaluate_code(code, eval_config)  # noqa: E731
        budget = Budget(limits)
        with Progress(ws.path / ".archer", budget, console=console, live=live,
                      title=f"archer run {ws.path}") as progress:
            progress.note(f"archer run {ws.path}: profile {ws.config.eval.profile}, proposer {kind}, "
                          f"budget {budget.summary()}")
            if ws.config.proposer.kind != kind:
                progress.note(f"proposer.kind is {ws.config.proposer.kind!r} but no [[proposer.endpoints]] "
                              f"are configured: using {kind}")
            for fix in ws.repairs:
                progress.note(f"repaired: {fix}")
            if pipelined:
                from agent.pipeline import run_pipelined
                return run_pipelined(ws, prop, proposer_kind=kind, budget=budget, progress=progress)
            return Search(ws, prop, evaluate, proposer_kind=kind, budget=budget, progress=progress).run()
