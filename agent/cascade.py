"""The evaluation cascade: a cheap profile first, dearer ones only for the candidates worth them.

EvalConfig.cascade names the stages in order (e.g. quick, screen, mad). After each stage a gate compares
the candidate's six-task mean with its parent's on the same profile: a stage admits every candidate
that is not worse beyond the noise, except the stages in EvalConfig.cascade_verify, which admit only
those that beat the parent beyond it. The record keeps the scores of the last stage reached outside
cascade_verify (so the table compares like with like), every stage's scores and the gate decisions in
execution["cascade"]. Pure functions; the loop runs each stage as its own job. Tested by tests/test_cascade.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from agent.config import EvalConfig
from agent.errors import ConfigError
from agent.records import TASKS, Candidate, EvalResult, Score
from agent.report import difference, mean_score as candidate_mean_score
from sandbox.profiles import PROFILES


@dataclass(frozen=True)
class Decision:
    next: str | None     # the profile of the next stage, None when the cascade stops here
    code: str            # cascade.promoted | cascade.ruled_out | cascade.verified | cascade.not_better |
                         # cascade.no_reference | cascade.failed | cascade.complete
    message: str


def stages(config: EvalConfig) -> list[str]:
    """The profiles a candidate may be evaluated on, in order; without a cascade, just eval.profile."""
    profiles = list(config.cascade) or [config.profile]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise ConfigError(f"eval.cascade: unknown profile {unknown[0]!r}; expected one of {', '.join(PROFILES)}")
    return profiles


def stage_score(result: EvalResult) -> Score | None:
    """A stage's six-task mean as a Score, per-seed means rebuilt from the per-task per-seed scores."""
    if result.status != "ok":
        return None
    if not all(t in result.scores for t in TASKS):
        return Score(mean=result.mean, std=result.std)
    n = min(len(result.scores[t].per_seed) for t in TASKS)
    per_seed = [sum(result.scores[t].per_seed[i] for t in TASKS) / len(TASKS) for i in range(n)]
    return Score(mean=result.mean, std=result.std, per_seed=per_seed)


def reference(parent: Candidate | None, profile: str) -> Score | None:
    """The parent's six-task mean on `profile`: from its cascade stages, or its record when scored there."""
    if parent is None:
        return None
    for stage in (parent.execution.get("cascade") or {}).get("stages", []):
        if stage.get("profile") == profile and stage.get("status") == "ok" and stage.get("mean_score"):
            return Score.model_validate(stage["mean_score"])
    if parent.scored and parent.profile == profile:
        return candidate_mean_score(parent)
    return None


def decide(config: EvalConfig, results: list[EvalResult], parent: Candidate | None) -> Decision:
    """Whether the candidate goes on to the next stage, given the stages it has been through."""
    profiles = stages(config)
    i = len(results) - 1
    profile, last = profiles[i], results[-1]
    if i + 1 >= len(profiles):
        return Decision(None, "cascade.complete", f"{profile}: the last stage of the cascade")
    nxt = profiles[i + 1]
    if last.status != "ok":
        return Decision(None, "cascade.failed", f"{profile}: status {last.status}; not evaluated on {nxt}")
    mine, theirs = stage_score(last), reference(parent, profile)
    verify = nxt in config.cascade_verify
    if theirs is None:
        if verify:
            return Decision(None, "cascade.no_reference",
                            f"{profile}: mean {mine.mean:.3f}; no parent score on {profile} to beat, "
                            f"so not verified on {nxt}")
        return Decision(nxt, "cascade.no_reference",
                        f"{profile}: mean {mine.mean:.3f}; no parent score on {profile} to compare with: on to {nxt}")
    d = difference(mine, theirs, "mean")
    noise = config.cascade_sigmas * d.sigma
    versus = (f"{profile}: mean {mine.mean:.3f} vs parent {parent.id:04d}'s {theirs.mean:.3f} "
              f"({d.delta:+.3f}, noise {noise:.3f})")
    if verify:
        if d.delta > noise:
            return Decision(nxt, "cascade.verified", f"{versus}: better beyond the noise, verified on {nxt}")
        return Decision(None, "cascade.not_better", f"{versus}: not better beyond the noise, not verified on {nxt}")
    if d.delta < -noise:
        return Decision(None, "cascade.ruled_out", f"{versus}: worse beyond the noise, not evaluated on {nxt}")
    return Decision(nxt, "cascade.promoted", f"{versus}: not worse beyond the noise, on to {nxt}")


def summary(profile: str, result: EvalResult, decision: Decision) -> dict:
    """What execution["cascade"]["stages"] keeps of one stage."""
    score = stage_score(result)
    return {"profile": profile, "status": result.status, "reason": result.reason, "mean": result.mean,
            "std": result.std, "mean_score": score.model_dump() if score is not None else None,
            "scores": {t: s.model_dump() for t, s in result.scores.items()},
            "seconds": result.timings.get("total_s", 0.0), "decision": decision.code, "message": decision.message}


def combine(config: EvalConfig, results: list[EvalResult], decisions: list[Decision]) -> EvalResult:
    """The result to record: the last stage reached outside cascade_verify, with every stage in execution."""
    if not config.cascade:
        return results[-1]
    profiles = stages(config)
    mains = [i for i, p in enumerate(profiles) if p not in config.cascade_verify] or [0]
    main_i = max((i for i in mains if i < len(results)), default=0)
    main = results[main_i]
    info = {"stages": [summary(p, r, d) for p, r, d in zip(profiles, results, decisions)],
            "stopped_at": profiles[len(results) - 1], "scored_on": profiles[main_i],
            "complete": len(results) > max(mains), "decision": decisions[-1].message}
    timings = {**main.timings, "cascade_s": sum(r.timings.get("total_s", 0.0) for r in results)}
    return main.model_copy(update={"execution": {**main.execution, "cascade": info}, "timings": timings})


def complete(cand: Candidate) -> bool:
    """False for a candidate the cascade stopped before its main stages: its scores are not comparable."""
    info = cand.execution.get("cascade")
    return not isinstance(info, dict) or bool(info.get("complete", True))
