"""The pipelined search: evaluations run in parallel on an executor while the loop proposes ahead.

The same stages as agent/loop.py's Search (propose and check here, in the controller; evaluate as jobs;
record), but up to slots + lookahead candidates are in evaluation at once, each candidate's cascade
stages run as separate jobs, and results are recorded in id order as they complete, by this one
controller. Every stage result is written to the candidate's journal entry, so a stopped run resumes
between stages. Tested by tests/test_executor.py and tests/test_cascade.py.
"""
from __future__ import annotations

import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait

from agent import cascade
from agent.errors import ArcherError
from agent.executor import Executor, Job, make_executor
from agent.loop import MAX_LOOP_ERRORS, MAX_PROPOSAL_FAILURES, Interrupted, RunSummary, Search, key_of
from agent.records import EvalResult
from sandbox.static_checks import fingerprint

WAIT_S = 1.0          # how often the controller looks up from waiting (signals are handled in between)


class PipelinedSearch(Search):
    """`run()` resumes the journal, scores the baseline, then keeps the executor's slots busy."""

    def __init__(self, ws, proposer, executor: Executor, *, lookahead: int | None = None, **kw):
        super().__init__(ws, proposer, evaluate=None, **kw)
        self.executor = executor
        self.window = executor.slots + (self.config.executor.lookahead if lookahead is None else lookahead)
        self.stages = cascade.stages(self.config.eval)
        self._entries: dict[int, dict] = {}     # taken and not yet recorded, by id
        self._jobs: dict[Future, int] = {}      # running or queued evaluations -> entry id
        self._ready: dict[int, dict] = {}       # evaluated (or rejected), waiting for lower ids
        self._recording = False
        self._errors = 0

    def run(self):
        with self._signals():
            try:
                self._fingerprint_history()
                resumed = self._in_flight()
                for entry in sorted(resumed, key=lambda e: (e["stage"] == "propose", e["id"])):
                    self._note(f"resuming {entry['id']:04d} at stage {entry['stage']}")
                    self._take(entry)
                if self.ws.get(0).status == "pending" and 0 not in self._entries:
                    self._take(self._baseline_entry())
                while True:
                    self._flush()
                    if not self._stop:
                        self._fill()
                    if self._jobs:
                        self._collect_some()
                    elif not self._ready:
                        break
            except Interrupted as e:
                self.summary.signal = e.signum
                self._stop = f"{e} received: work in flight abandoned; `archer run` resumes it"
                self.executor.cancel()
            except ArcherError as e:
                self._finish(f"error: {e}")
                raise
        self._finish(self._stop)
        return self.summary

    # -- scheduling -----------------------------------------------------------------------------

    def _fill(self) -> None:
        """Propose until the window of candidates in evaluation is full, the budget spent, or a stop."""
        while not self._stop and len(self._jobs) < self.window:
            if self.ws.get(0).status == "pending":
                return                                  # parents need the baseline's scores first
            spent = self._spent()
            if spent:
                if not self._entries:
                    self._stop = f"budget spent ({spent})"
                return
            queued = [e for e in self._in_flight() if e["id"] not in self._entries]
            self._take(queued[0] if queued else self._new_entry())
            self._flush()
            if self._errors >= MAX_LOOP_ERRORS:
                raise ArcherError(f"{self._errors} unexpected errors in a row; see {self.ws.path}/.archer/run.log")
            if self._proposal_failures >= MAX_PROPOSAL_FAILURES:
                self._stop = f"the proposer failed {self._proposal_failures} times in a row"

    def _spent(self) -> str | None:
        """The budget as the loop sees it: candidates in flight count as spent."""
        limit = self.budget.limits.candidates
        taken = self.budget.candidates + sum(1 for e in self._entries.values() if not e.get("update"))
        if limit is not None and taken >= limit:
            return f"candidates {taken}/{limit}"
        return self.budget.exhausted()

    def _take(self, entry: dict) -> None:
        self._entries[entry["id"]] = entry
        self._count(self._guarded(entry))

    def _count(self, ok: bool) -> None:
        self._errors = 0 if ok else self._errors + 1

    def _advance(self, entry: dict) -> None:
        """Propose and check in the controller; then submit the evaluation, or queue the record."""
        if not self._keep_parent(entry):
            self._entries.pop(entry["id"], None)
            return
        while True:
            self._checkpoint()
            stage = entry["stage"]
            if stage == "propose":
                self._propose(entry)
            elif stage == "evaluate":
                self._submit(entry)
                return
            elif stage == "record":
                if self._recording:
                    self._record(entry)
                else:
                    self._ready[entry["id"]] = entry
                return
            else:
                raise ArcherError(f"journal entry {key_of(entry['id'])}: unknown stage {stage!r}")

    def _submit(self, entry: dict) -> None:
        results = entry.setdefault("stages", [])
        profile = self.stages[len(results)]
        name = entry["proposal"]["name"] if entry.get("proposal") else "baseline"
        self.fingerprints.setdefault(fingerprint(entry["code"]), f"{entry['id']:04d} {name}")
        job = Job.of(f"{key_of(entry['id'])}:{profile}", entry["code"], self.config.eval, profile=profile)
        self._stage(f"evaluate {profile}" if len(self.stages) > 1 else "evaluate", entry["id"], name, entry["parent"])
        self._put(entry)
        self._jobs[self.executor.submit(job)] = entry["id"]

    def _collect_some(self) -> None:
        with self._interruptible_section():
            done, _ = wait(list(self._jobs), timeout=WAIT_S, return_when=FIRST_COMPLETED)
        for fut in sorted(done, key=lambda f: self._jobs[f]):
            entry = self._entries[self._jobs.pop(fut)]
            self._count(self._guarded_step(entry, lambda e, f=fut: self._finish_stage(e, f)))

    def _finish_stage(self, entry: dict, fut: Future) -> None:
        """Keep a stage's result; submit the next stage when the cascade says so, else queue the record."""
        try:
            result = fut.result()
        except Exception as e:                      # the executor lost the job: recorded as a crash
            result = EvalResult(status="crashed", reason="executor_error", message=f"{type(e).__name__}: {e}",
                                log_tail=traceback.format_exc())
        entry["stages"].append(result.model_dump())
        results = [EvalResult.model_validate(r) for r in entry["stages"]]
        parent = self.ws.get(entry["parent"]) if entry["parent"] is not None else None
        decisions = [cascade.decide(self.config.eval, results[:i + 1], parent) for i in range(len(results))]
        if len(self.stages) > 1:
            self._note(f"{entry['id']:04d} {decisions[-1].message}")
        if decisions[-1].next is not None:
            self._submit(entry)
            return
        final = cascade.combine(self.config.eval, results, decisions)
        entry.update(stage="record", result=final.model_dump(), status=final.status)
        self._put(entry)
        self._ready[entry["id"]] = entry

    def _guarded_step(self, entry: dict, step) -> bool:
        """Run one step for an entry; an unexpected error records the entry as crashed (as Search does)."""
        try:
            step(entry)
            return True
        except (ArcherError, Interrupted):
            raise
        except Exception as e:
            self._note(f"{entry['id']:04d}: unexpected error {type(e).__name__}: {e}")
            entry.update(stage="record", status="crashed", log_tail=traceback.format_exc(),
                         reasons=[{"code": "loop.error", "message": f"{type(e).__name__}: {e}"}])
            entry.pop("result", None)
            self._put(entry)
            self._ready[entry["id"]] = entry
            return False

    def _flush(self) -> None:
        """Record every evaluated entry whose lower ids are all recorded (so commits follow the ids)."""
        while self._ready:
            waiting = [i for i in self._entries if i not in self._ready]
            first = min(self._ready)
            if waiting and min(waiting) < first:
                return
            entry = self._ready.pop(first)
            self._recording = True
            try:
                self._count(self._guarded(entry))
            finally:
                self._recording = False
            self._entries.pop(first, None)


def run_pipelined(ws, proposer, *, progress=None, **kw) -> RunSummary:
    """A PipelinedSearch on the executor archer.toml asks for; work left running by an error is abandoned."""
    executor = make_executor(ws.config)
    if progress is not None:
        progress.note(f"executor: {executor.describe()}; stages: {' -> '.join(cascade.stages(ws.config.eval))}")
    try:
        return PipelinedSearch(ws, proposer, executor, progress=progress, **kw).run()
    except BaseException:
        executor.cancel()
        raise
    finally:
        executor.close()
