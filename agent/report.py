"""The insight report (report.md): the proposal's bilingual rationale plus an outcome from the data.

English section, then Chinese section, each complete, rendered from prompts/report_en.j2 and
prompts/report_zh.j2; this module computes only numbers (differences, their uncertainty, whether
they exceed the noise). Tested by tests/test_report.py.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agent.prompts import render
from agent.proposal import Proposal
from agent.records import TASKS, TASK_TITLES, Candidate, Reason, Score

# Largest difference between two runs of the same model in shared/reference/calibration.md
# (runs A and B of delta_net_4layer and gated_delta_net_4layer): the documented noise prior of one
# evaluation with a single seed. Read as two standard errors of a difference of two single runs.
NOISE_PRIOR = {
    "compress": 0.045,
    "context_recall": 0.0008,
    "fuzzy_recall": 0.027,
    "memorize": 0.233,
    "noisy_recall": 0.0022,
    "selective_copy": 0.041,
    "mean": 0.032,
}
SIGNIFICANCE = 2.0        # a difference beyond this many standard errors is more than noise
EXCERPT_CHARS = 3000      # raw LLM reply and log tail shown in a report


@dataclass(frozen=True)
class Difference:
    """a - b with its standard error; `prior` says the calibration prior stood in for missing seeds."""
    delta: float
    sigma: float
    prior: bool

    @property
    def exceeds(self) -> bool:
        return abs(self.delta) > SIGNIFICANCE * self.sigma


def _variance_of_mean(score: Score, key: str) -> tuple[float, bool]:
    n = len(score.per_seed)
    if n >= 2:
        return score.std ** 2 / n, False
    return (NOISE_PRIOR[key] / SIGNIFICANCE) ** 2 / 2, True


def difference(a: Score, b: Score, key: str) -> Difference:
    """a - b with sqrt(s_a^2/n_a + s_b^2/n_b); a side with one seed uses the calibration prior."""
    va, pa = _variance_of_mean(a, key)
    vb, pb = _variance_of_mean(b, key)
    return Difference(a.mean - b.mean, math.sqrt(va + vb), pa or pb)


def mean_score(cand: Candidate) -> Score | None:
    """The six-task mean as a Score (per-seed means rebuilt from the per-task per-seed scores)."""
    if not cand.scored:
        return None
    n = min((len(cand.scores[t].per_seed) for t in TASKS if t in cand.scores), default=0)
    per_seed = [sum(cand.scores[t].per_seed[i] for t in TASKS) / len(TASKS) for i in range(n)] \
        if all(t in cand.scores for t in TASKS) else []
    return Score(mean=cand.mean, std=cand.std, per_seed=per_seed)


@dataclass(frozen=True)
class Row:
    key: str                         # a task key of TASKS, or "mean"
    title: str
    predicted: float | None
    measured: Score | None
    vs_parent: Difference | None
    vs_baseline: Difference | None

    @property
    def error(self) -> float | None:
        if self.predicted is None or self.measured is None:
            return None
        return self.measured.mean - self.predicted


def comparable(cand: Candidate, other: Candidate | None) -> bool:
    """Whether `other`'s scores can be subtracted from `cand`'s: both scored, on the same profile and model."""
    return (other is not None and other.id != cand.id and other.scored and cand.scored
            and other.profile == cand.profile and other.model == cand.model)


def outcome_rows(cand: Candidate, parent: Candidate | None, baseline: Candidate | None) -> list[Row]:
    """One row per task and one for the mean: predicted, measured, differences from parent and baseline."""
    rows = []
    others = [o if comparable(cand, o) else None for o in (parent, baseline)]
    for key in (*TASKS, "mean"):
        if key == "mean":
            measured = mean_score(cand)
            predicted = sum(cand.predicted[t] for t in TASKS) / len(TASKS) \
                if all(t in cand.predicted for t in TASKS) else None
            theirs = [mean_score(o) if o is not None else None for o in others]
        else:
            measured = cand.scores.get(key) if cand.scored else None
            predicted = cand.predicted.get(key)
            theirs = [o.scores.get(key) if o is not None else None for o in others]
        diffs = [difference(measured, t, key) if measured is not None and t is not None else None
                 for t in theirs]
        rows.append(Row(key, TASK_TITLES.get(key, "mean"), predicted, measured, *diffs))
    return rows


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The end of a long text (log tails, raw replies), fences neutralised for markdown."""
    text = text.replace("```", "'''")
    return text if len(text) <= limit else "…" + text[-limit:]


def render_report(cand: Candidate, proposal: Proposal | None, *, parent: Candidate | None,
                  baseline: Candidate | None, reply_excerpt: str = "", attempts: Sequence[Reason] = (),
                  repair_of: Candidate | None = None) -> str:
    """report.md for `cand`: English then Chinese, each with the rationale and the outcome.

    `attempts` are the check failures sent back to the proposer before this version; `repair_of` the
    candidate whose failed evaluation this one repairs."""
    if baseline is not None and baseline.id == cand.id:
        baseline = None
    show_parent = comparable(cand, parent)
    show_baseline = comparable(cand, baseline) and not (show_parent and parent.id == baseline.id)
    elsewhere = [o for o in (parent, baseline) if o is not None and o.id != cand.id and o.scored and cand.scored
                 and not comparable(cand, o)]
    context = dict(
        cand=cand, proposal=proposal, parent=parent, baseline=baseline,
        show_parent=show_parent, show_baseline=show_baseline, elsewhere=list({o.id: o for o in elsewhere}.values()),
        rows=outcome_rows(cand, parent, baseline), tasks=TASKS, titles=TASK_TITLES,
        noise_prior=NOISE_PRIOR, significance=SIGNIFICANCE,
        reply_excerpt=excerpt(reply_excerpt) if reply_excerpt else "", attempts=list(attempts), repair_of=repair_of,
        log_excerpt=excerpt(cand.log_tail) if cand.log_tail and not cand.scored else "",
    )
    return render("report_en.j2", **context).rstrip() + "\n\n" + render("report_zh.j2", **context).rstrip() + "\n"
