"""The search loop of `archer run`: select a parent, propose, check, evaluate, record; until a budget is spent.

The loop receives `evaluate` and `proposer` as injected callables and knows nothing of subprocesses or
HTTP. Each candidate's work in flight is one journal entry, advanced stage by stage (propose -> evaluate
-> record) and written after every step that cost something, so a run stopped anywhere resumes exactly:
a proposal already received is never asked for again, an evaluation cut short is run again, nothing is
recorded twice. Tested by tests/test_loop*.py and tests/test_run_e2e.py.
"""
from __future__ import annotations

import random
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from agent import cascade
from agent.budget import Budget
from agent.context import build_context
from agent.errors import ArcherError, ProposalError
from agent.history import Workspace, summary_of
from agent.parents import select_parent
from agent.progress import Progress
from agent.proposal import Proposal, unique_name
from agent.records import Candidate, CheckFinding, EvalResult, Reason, Usage
from agent.report import render_report
from sandbox.static_checks import check_static, fingerprint, first_failure

Evaluate = Callable[[str], EvalResult]
EVAL_FAILURES = ("invalid", "timeout", "oom", "crashed", "nan")
MAX_PROPOSAL_FAILURES = 10     # consecutive candidates without a usable proposal: the proposer is broken
MAX_LOOP_ERRORS = 3            # consecutive unexpected errors in the loop itself
FAILURE_LOG_LINES = 30         # lines of the worker log sent back with a failed evaluation


class Interrupted(BaseException):
    """Raised in the main thread by the signal handler to abandon the work in flight."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class RunSummary:
    recorded: list[int] = field(default_factory=list)
    stopped: str = ""
    signal: int | None = None        # set when a signal abandoned the work in flight


def key_of(id: int) -> str:
    return f"cand-{id:04d}"



def failure_text(result: EvalResult) -> str:
    """What a proposer is told about a failed evaluation: status, reason, message and the log's end."""
    tail = "\n".join(result.log_tail.strip().splitlines()[-FAILURE_LOG_LINES:])
    head = f"evaluation {result.status}: {result.reason}: {result.message}".strip()
    return f"{head}\n{tail}" if tail else head


class Search:
    """One `archer run` over a workspace. `run()` resumes the journal, scores the baseline, then searches."""

    def __init__(self, ws: Workspace, proposer, evaluate: Evaluate, *, proposer_kind: str = "mutate",
                 budget: Budget | None = None, progress: Progress | None = None,
                 repair_failed_evaluations: bool | None = None):
        self.ws = ws
        self.config = ws.config
        self.proposer = proposer
        self.evaluate = evaluate
        self.proposer_kind = proposer_kind
        self.budget = budget or Budget(self.config.budget)
        self.progress = progress
        self.repair_evaluations = proposer_kind == "llm" if repair_failed_evaluations is None \
            else repair_failed_evaluations
        self.summary = RunSummary()
        self.fingerprints: dict[str, str] = {}
        self._stop: str = ""
        self._abandon: int | None = None
        self._interruptible = False
        self._proposal_failures = 0

    def run(self) -> RunSummary:
        with self._signals():
            try:
                self._fingerprint_history()
                for entry in self._in_flight():
                    self._note(f"resuming {entry['id']:04d} at stage {entry['stage']}")
                    self._guarded(entry)
                if self.ws.get(0).status == "pending" and not self._stop:
                    self._guarded(self._baseline_entry())
                errors = 0
                while not self._stop:
                    spent = self.budget.exhausted()
                    if spent:
                        self._stop = f"budget spent ({spent})"
                        break
                    queued = self._in_flight()
                    entry = queued[0] if queued else self._new_entry()
                    errors = 0 if self._guarded(entry) else errors + 1
                    if errors >= MAX_LOOP_ERRORS:
                        raise ArcherError(f"{errors} unexpected errors in a row; see {self.ws.path}/.archer/run.log")
                    if self._proposal_failures >= MAX_PROPOSAL_FAILURES:
                        self._stop = f"the proposer failed {self._proposal_failures} times in a row"
            except Interrupted as e:
                self.summary.signal = e.signum
                self._stop = f"{e} received: work in flight abandoned; `archer run` resumes it"
            except ArcherError as e:
                self._finish(f"error: {e}")
                raise
        self._finish(self._stop)
        return self.summary

    def _finish(self, reason: str) -> None:
        self.summary.stopped = reason
        if self.progress is not None:
            self.progress.finished(reason)

    def _guarded(self, entry: dict) -> bool:
        """Advance one entry to its record; an unexpected error is recorded as a crashed candidate."""
        try:
            self._advance(entry)
            return True
        except (ArcherError, Interrupted):
            raise
        except Exception as e:
            tb = traceback.format_exc()
            self._note(f"{entry['id']:04d}: unexpected error {type(e).__name__}: {e}")
            if entry.get("proposal") is None and not entry.get("update"):
                entry.setdefault("name", unique_name(f"loop_error_{entry['id']:04d}", self.ws.names()))
            entry.update(stage="record", status="crashed", log_tail=tb,
                         reasons=[{"code": "loop.error", "message": f"{type(e).__name__}: {e}"}])
            entry.pop("result", None)
            try:
                self._advance(entry)
            except Exception as again:
                self._note(traceback.format_exc())
                raise ArcherError(f"{entry['id']:04d} could not be recorded ({type(again).__name__}: {again}); "
                                  f"the journal keeps it; see {self.ws.path}/.archer/run.log") from None
            return False

    def _advance(self, entry: dict) -> None:
        if not self._keep_parent(entry):
            return
        while True:
            self._checkpoint()
            if entry["stage"] == "propose":
                self._propose(entry)
            elif entry["stage"] == "evaluate":
                self._evaluate(entry)
            elif entry["stage"] == "record":
                self._record(entry)
                return
            else:
                raise ArcherError(f"journal entry {key_of(entry['id'])}: unknown stage {entry['stage']!r}")

    def _keep_parent(self, entry: dict) -> bool:
        """False when the entry's parent was reverted while it was in flight (the entry is dropped);
        an entry not yet proposed is given a new parent instead."""
        parent = entry.get("parent")
        if parent is not None and parent not in self.ws.ids():
            if entry["stage"] == "propose" and entry.get("proposal") is None:
                entry["parent"] = self._select_parent(entry["id"]).id
                self._put(entry)
            else:
                self._note(f"{entry['id']:04d} dropped: its parent {parent:04d} was reverted while it was in flight")
                self.ws.journal.done(key_of(entry["id"]))
                return False
        return True

    def _new_entry(self) -> dict:
        id = self.ws.next_id()
        self._stage("select", id)
        parent = self._select_parent(id)
        entry = {"id": id, "parent": parent.id, "stage": "propose", "proposal": None, "repair": None,
                 "rounds": 0, "duplicate_returned": False, "attempts": [], "usage": Usage().model_dump(),
                 "raw": "", "repair_of": None}
        self._put(entry)
        return entry

    def _select_parent(self, id: int) -> Candidate:
        """The parent of candidate `id`: the policy's choice, with randomness fixed by the seed and the id."""
        rng = random.Random(f"{self.config.seed}:{id}")
        records = self.ws.records()
        stopped_early = [c.id for c in records if not cascade.complete(c)]   # scored on a cheaper profile only
        codeless = [c.id for c in records if c.proposer == "import" and not self.ws.has_code(c.id)]
        return select_parent(records, self.config.parents, rng, reverted=stopped_early + codeless)

    def _baseline_entry(self) -> dict:
        entry = {"id": 0, "parent": None, "stage": "evaluate", "code": self.ws.code(0), "update": True,
                 "proposal": None, "attempts": [], "usage": Usage().model_dump(), "raw": "", "repair_of": None}
        self._put(entry)
        return entry

    def _propose(self, entry: dict) -> None:
        parent = self.ws.get(entry["parent"])
        ctx = build_context(self.ws, parent, fingerprints=self.fingerprints,
                            reports=self.config.proposer.history_reports)
        while True:
            if entry["proposal"] is None or entry["repair"] is not None:
                self._stage("propose", entry["id"], parent=parent.id)
                try:
                    with self._interruptible_section():
                        if entry["repair"] is None:
                            proposal, usage = self.proposer.propose(ctx)
                        else:
                            old = Proposal.model_validate(entry["proposal"])
                            proposal, usage = self.proposer.repair(ctx, old, entry["repair"])
                except ProposalError as e:
                    self._add_usage(entry, e.usage)
                    reason = {"code": f"proposal.{e.kind or 'error'}", "message": str(e)}
                    if entry.get("checked"):       # a repair after failed checks: keep what was checked
                        reasons = [*entry["attempts"][-1:], reason]
                    else:                          # no usable proposal at all
                        entry.update(proposal=None, code=None)
                        reasons = [reason]
                        self._proposal_failures += 1
                    entry.update(stage="record", status="rejected", raw=e.raw or "", repair=None, reasons=reasons)
                    self._put(entry)
                    return
                self._proposal_failures = 0
                self._add_usage(entry, usage)
                entry.update(proposal=proposal.model_dump(), repair=None, code=None)
                self._put(entry)
            proposal = Proposal.model_validate(entry["proposal"])
            self._stage("check", entry["id"], proposal.name, parent.id)
            failure, findings, code = self._check(proposal, ctx.parent_code)
            entry.update(checks=findings, code=code, checked=True)
            if failure is None:
                entry["stage"] = "evaluate"
                self._put(entry)
                return
            duplicate = failure["code"] == "duplicate"
            if duplicate and not entry["duplicate_returned"]:
                entry["duplicate_returned"] = True
            elif not duplicate and entry["rounds"] < self.config.proposer.repair_rounds:
                entry["rounds"] += 1
            else:
                entry.update(stage="record", status="rejected", reasons=[failure])
                self._put(entry)
                return
            entry["attempts"].append(failure)
            self._note(f"{entry['id']:04d} {proposal.name}: {failure['code']}: sent back for repair")
            entry["repair"] = f"{failure['code']}: {failure['message']}"
            self._put(entry)

    def _check(self, proposal: Proposal, parent_code: str) -> tuple[dict | None, list[dict], str | None]:
        """(first failure as a reason dict or None, check findings, the full code when it could be built)."""
        try:
            code = proposal.resolve_code(parent_code)
        except ProposalError as e:
            return {"code": "proposal.edit", "message": str(e)}, [], None
        results = check_static(code, self.fingerprints)
        failed = first_failure(results)
        findings = [r.as_dict() for r in results]
        return (None if failed is None else {"code": failed.reason, "message": failed.message}), findings, code

    def _evaluate(self, entry: dict) -> None:
        name = entry["proposal"]["name"] if entry.get("proposal") else "baseline"
        self._stage("evaluate", entry["id"], name, entry["parent"])
        with self._interruptible_section():
            result = self.evaluate(entry["code"])
        entry.update(stage="record", result=result.model_dump(), status=result.status)
        self._put(entry)

    def _record(self, entry: dict) -> None:
        ws = self.ws
        proposal = Proposal.model_validate(entry["proposal"]) if entry.get("proposal") else None
        parent = ws.get(entry["parent"]) if entry["parent"] is not None else None
        code = entry.get("code") or (ws.code(parent.id) if parent is not None else ws.code(0))
        usage = Usage.model_validate(entry["usage"])
        if entry.get("update"):
            cand = ws.get(0)
        else:
            name = entry.get("name")
            if name is None:
                base = proposal.name if proposal is not None else f"proposal_failed_{entry['id']:04d}"
                name = entry["name"] = unique_name(base, ws.names())
                self._put(entry)
            label = f"llm:{usage.model}" if self.proposer_kind == "llm" and usage.model else self.proposer_kind
            cand = Candidate(id=entry["id"], name=name, parent=entry["parent"], proposer=label, status="rejected",
                             predicted=proposal.predicted if proposal else {}, usage=usage,
                             mutations=proposal.mutations if proposal else [])
        self._stage("record", cand.id, cand.name, cand.parent)
        cand = self._with_outcome(cand, entry)
        baseline = cand if cand.id == 0 else ws.get(0)
        repair_of = ws.get(entry["repair_of"]) if entry.get("repair_of") is not None else None
        report = render_report(cand, proposal, parent=parent, baseline=baseline, reply_excerpt=entry.get("raw", ""),
                               attempts=[Reason.model_validate(a) for a in entry.get("attempts", [])],
                               repair_of=repair_of)
        if entry.get("update"):
            ws.update(cand, report)
        else:
            ws.record(cand, code, report)
            self.budget.add(usage, recorded=1)
            self.summary.recorded.append(cand.id)
        self.fingerprints.setdefault(fingerprint(code), f"{cand.id:04d} {cand.name}")
        self._feedback(cand, parent)
        followup = self._followup(entry, cand, proposal)
        if followup is not None:
            entry["followup"] = followup["id"]
            self._put(entry)
            self._put(followup)
        ws.journal.done(key_of(cand.id))
        if self.progress is not None:
            self.progress.recorded(cand, summary_of(cand, parent), ws.best())

    def _with_outcome(self, cand: Candidate, entry: dict) -> Candidate:
        checks = [CheckFinding.model_validate(f) for f in entry.get("checks", [])]
        if entry.get("result") is not None:
            r = EvalResult.model_validate(entry["result"])
            ok = r.status == "ok"
            checks += [c for c in r.checks if c.name not in {k.name for k in checks}]
            return cand.model_copy(update=dict(
                status=r.status, reasons=[] if ok else [Reason(code=r.reason or r.status, message=r.message)],
                profile=r.profile, model=r.model or cand.model, seeds=r.seeds, scores=r.scores,
                mean=r.mean if ok else None, std=r.std if ok else 0.0, checks=checks,
                settings=r.settings, timings=r.timings, execution=r.execution, environment=r.environment,
                log_tail=r.log_tail))
        return cand.model_copy(update=dict(
            status=entry.get("status", "rejected"), reasons=[Reason.model_validate(x) for x in entry.get("reasons", [])],
            checks=checks, log_tail=entry.get("log_tail", ""), mean=None))

    def _followup(self, entry: dict, cand: Candidate, proposal: Proposal | None) -> dict | None:
        """A failed evaluation goes back to an LLM proposer as a repair: the next candidate, same parent."""
        if entry.get("followup") is not None or not self.repair_evaluations or proposal is None:
            return None
        if cand.status not in EVAL_FAILURES or entry.get("rounds", 0) >= self.config.proposer.repair_rounds:
            return None
        if self._stop or self._abandon is not None or self.budget.exhausted():
            return None
        result = EvalResult.model_validate(entry["result"])
        return {"id": self.ws.next_id(), "parent": entry["parent"], "stage": "propose", "proposal": entry["proposal"],
                "repair": failure_text(result), "rounds": entry.get("rounds", 0) + 1, "duplicate_returned": False,
                "attempts": [], "usage": Usage().model_dump(), "raw": "", "repair_of": cand.id}

    def _feedback(self, cand: Candidate, parent: Candidate | None) -> None:
        """Tell an LLM proposer's endpoint bandit what the candidate bought and what it cost."""
        endpoint_of = getattr(self.proposer, "endpoint_of", None)
        if endpoint_of is None or parent is None:
            return
        endpoint = endpoint_of(cand.usage)
        if endpoint is not None:
            gain = cand.mean - parent.mean if cand.scored and parent.scored else 0.0
            self.proposer.observe(endpoint, gain, self.proposer.cost_of(cand.usage))

    def _in_flight(self) -> list[dict]:
        """The journal's candidate entries (work left by a stopped run, or queued repairs), by id."""
        entries = [e for k, e in self.ws.journal.pending().items() if k.startswith("cand-")]
        return sorted(entries, key=lambda e: e["id"])

    def _fingerprint_history(self) -> None:
        for cand in self.ws.records(include_reverted=True):
            self.fingerprints.setdefault(fingerprint(self.ws.code(cand.id)), f"{cand.id:04d} {cand.name}")

    def _add_usage(self, entry: dict, usage: Usage | None) -> None:
        if usage is not None:
            entry["usage"] = (Usage.model_validate(entry["usage"]) + usage).model_dump()

    def _put(self, entry: dict) -> None:
        self.ws.journal.put(key_of(entry["id"]), entry)

    def _stage(self, stage: str, id: int, name: str = "", parent: int | None = None) -> None:
        if self.progress is not None:
            self.progress.stage(stage, id, name, parent)

    def _note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.note(text)

    def _checkpoint(self) -> None:
        if self._abandon is not None:
            raise Interrupted(self._abandon)

    @contextmanager
    def _interruptible_section(self) -> Iterator[None]:
        self._checkpoint()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _on_signal(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and not self._stop:
            self._stop = "stopped by Ctrl-C after the candidate in flight"
            self._note("Ctrl-C: finishing the candidate in flight, then stopping (Ctrl-C again to abandon it)")
            return
        self._abandon = signum
        self._stop = self._stop or signal.Signals(signum).name
        if self._interruptible:
            self._interruptible = False
            raise Interrupted(signum)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
