"""The structured records of the history: candidate.json and the evaluation result inside it.

Pydantic mirrors of sandbox/result.py (the worker's JSON) plus what the controller adds: identity,
lineage, proposer, LLM usage, predictions. Tested by tests/test_records.py.
"""
from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from sandbox.result import STATUSES, TASKS, TASK_TITLES  # noqa: F401  (re-exported)

# recorded statuses: the worker's, plus "rejected" (failed static checks or a duplicate: never evaluated)
# and "pending" (recorded but not yet evaluated: the baseline right after `archer init`)
RECORD_STATUSES = STATUSES + ("rejected", "pending")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Score(Strict):
    mean: float
    std: float = 0.0
    per_seed: list[float] = Field(default_factory=list)


class SettingScore(Strict):
    task: str
    setting: str
    seed: int
    lr: float
    weight_decay: float
    accuracy: float
    whole_set_accuracy: float | None = None     # absent in results written before it was recorded
    token_accuracy: float
    valid_accuracy: float = 0.0
    steps: int
    best_step: int
    seconds: float


class CheckFinding(Strict):
    name: str
    passed: bool
    reason: str = ""
    message: str = ""
    seconds: float = 0.0


class EvalResult(Strict):
    status: str
    reason: str = ""
    message: str = ""
    model: str = ""
    profile: str = ""
    seeds: list[int] = Field(default_factory=list)
    candidate_sha256: str = ""
    scores: dict[str, Score] = Field(default_factory=dict)
    whole_set_accuracy: dict[str, Score] = Field(default_factory=dict)
    token_accuracy: dict[str, Score] = Field(default_factory=dict)
    mean: float = 0.0
    std: float = 0.0
    settings: list[SettingScore] = Field(default_factory=list)
    checks: list[CheckFinding] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    execution: dict[str, object] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    log_tail: str = ""


class Usage(Strict):
    """LLM cost of one candidate, summed over its calls (propose + repairs)."""
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""          # endpoint/model that produced it ("" for offline proposers)
    seconds: float = 0.0
    retries: int = 0         # transient failures retried (429, 5xx, timeouts, connection errors)

    def __add__(self, other: "Usage") -> "Usage":
        """The sum of two calls' usage (propose + repairs); the model is the first one named."""
        return Usage(calls=self.calls + other.calls, prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens,
                     cost_usd=self.cost_usd + other.cost_usd, model=self.model or other.model,
                     seconds=round(self.seconds + other.seconds, 3), retries=self.retries + other.retries)


class Reason(Strict):
    code: str                # e.g. "static.forbidden_name", "duplicate", "causality", "timeout"
    message: str


class Candidate(Strict):
    """candidate.json: one evaluated (or rejected) candidate."""
    id: int
    name: str
    parent: int | None                 # None only for the baseline (0)
    proposer: str                      # "baseline", "mutate", "llm:<model>", "replay", "import"
    status: str                        # one of RECORD_STATUSES
    reasons: list[Reason] = Field(default_factory=list)
    profile: str = ""
    model: str = "delta_net"
    seeds: list[int] = Field(default_factory=list)
    scores: dict[str, Score] = Field(default_factory=dict)   # keys from TASKS
    mean: float | None = None          # None when not scored
    std: float = 0.0
    predicted: dict[str, float] = Field(default_factory=dict)  # the proposer's expected per-task scores
    checks: list[CheckFinding] = Field(default_factory=list)
    settings: list[SettingScore] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    execution: dict[str, object] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    log_tail: str = ""
    replay_of: int | None = None       # set by `archer replay`
    onto: int | None = None            # set by `archer replay --onto`
    mutations: list[str] = Field(default_factory=list)  # mutate proposer: transformations applied
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def scored(self) -> bool:
        return self.status == "ok" and self.mean is not None
