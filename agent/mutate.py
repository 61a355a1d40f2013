"""The `mutate` proposer: the embedded default that needs no network.

Applies 1..max_mutations transformations (agent/mutations.py) to the parent's code, or undoes one it
carries, chosen by a bandit over the measured gains of earlier children (rebuilt from ctx.records on
every call: exact resume); never repeats a fingerprint; rationale from prompts/mutate/ and the real
table. Tested by tests/test_mutate.py."""
from __future__ import annotations

import hashlib
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from agent.bandit import Bandit
from agent.context import ProposalContext
from agent.errors import ProposalError
from agent.mutations import BY_NAME, CATALOGUE, UNDO, Removal, Transformation, applied, label, locate, parse_label
from agent.prompts import render
from agent.proposal import SECTIONS, Bilingual, Proposal, unique_name
from agent.records import TASK_TITLES, TASKS, Candidate, Usage
from sandbox.static_checks import check_static, first_failure, fingerprint

FAILED = ("invalid", "timeout", "oom", "crashed", "nan", "rejected")
# Reward of a child that failed: worse than any plausible noise in a mean (about 0.02, calibration.md)
# but not so large that one crash outweighs several measured gains of the same transformation.
FAILURE_REWARD = -0.05
# The spread assumed for a reward before two children of one transformation were measured: about the
# run-to-run noise of a per-task score in the calibration runs.
PRIOR_NOISE = 0.02
NAME_PREFIX = "delta_net_"
Chain = list[tuple[Transformation | Removal, dict]]


@dataclass(frozen=True)
class Trial:
    """One earlier child of the mutate proposer and what its transformations earned."""
    child: Candidate
    parent: Candidate
    reward: float
    labels: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(parse_label(m)[0] for m in self.labels)


def trials(records: Iterable[Candidate]) -> list[Trial]:
    """Every recorded child with mutations whose parent is known and scored, and whose outcome is in."""
    records = list(records)
    by_id = {r.id: r for r in records}
    out = []
    for child in records:
        parent = by_id.get(child.parent) if child.parent is not None else None
        if not child.mutations or child.replay_of is not None or parent is None or not parent.scored:
            continue
        if child.scored:
            reward = child.mean - parent.mean
        elif child.status in FAILED:
            reward = FAILURE_REWARD
        else:
            continue
        out.append(Trial(child, parent, reward, tuple(child.mutations)))
    return out


def task_effect(t: Transformation, history: list[Trial]) -> dict[str, float]:
    """Expected change per task: the prior counted as one observation, then the measured deltas."""
    effect = {}
    for task in TASKS:
        deltas = [tr.child.scores[task].mean - tr.parent.scores[task].mean for tr in history
                  if t.name in tr.names and tr.child.scored and task in tr.child.scores and task in tr.parent.scores]
        effect[task] = (t.prior.get(task, 0.0) + sum(deltas)) / (1 + len(deltas))
    return effect


def effect_of(t: Transformation | Removal, params: dict, history: list[Trial]) -> dict[str, float]:
    """Expected change per task of applying `t`; removing a transformation is expected to undo its effect."""
    if isinstance(t, Removal):
        removed = BY_NAME.get(str(params.get("name")))
        return {task: -v for task, v in task_effect(removed, history).items()} if removed else dict.fromkeys(TASKS, 0.0)
    return task_effect(t, history)


def predict(parent: Candidate, effects: Iterable[dict[str, float]]) -> dict[str, float]:
    """The parent's score per task plus the summed expected changes, clipped to [0, 1]; {} when unscored."""
    if not parent.scored:
        return {}
    effects = list(effects)
    return {task: round(min(1.0, max(0.0, parent.scores[task].mean + sum(e[task] for e in effects))), 4)
            for task in TASKS if task in parent.scores}


def lesson(t: Transformation, history: list[Trial]) -> dict:
    """What earlier children measured for `t` and for its family, for the rationale's lessons."""
    mine = [tr for tr in history if t.name in tr.names]
    family = [tr for tr in history if any(BY_NAME[n].family == t.family for n in tr.names if n in BY_NAME)]
    top = max((tr for tr in mine if tr.child.scored), key=lambda tr: tr.reward, default=None)
    return {
        "name": t.name, "family": t.family, "trials": len(mine),
        "mean_reward": sum(tr.reward for tr in mine) / len(mine) if mine else None,
        "failures": sum(not tr.child.scored for tr in mine),
        "best": {"id": top.child.id, "name": top.child.name, "reward": top.reward, "labels": list(top.labels)}
        if top else None,
        "family_trials": len(family),
        "family_mean": sum(tr.reward for tr in family) / len(family) if family else None,
    }


def _seed(*parts: object) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def _row(c: Candidate | None) -> dict | None:
    if c is None:
        return None
    return {"id": c.id, "name": c.name, "mean": c.mean, "status": c.status, "mutations": list(c.mutations),
            "scores": [{"task": t, "title": TASK_TITLES[t], "value": c.scores[t].mean} for t in TASKS if t in c.scores]}


class MutateProposer:
    """propose(ctx) -> (Proposal, Usage); repair() excludes the failed transformations and proposes again."""

    def __init__(self, seed: int = 0, max_mutations: int = 2, catalogue: Iterable[Transformation] = CATALOGUE,
                 undo: bool = True):
        if max_mutations < 1:
            raise ValueError("max_mutations must be at least 1")
        self.seed = seed
        self.max_mutations = max_mutations
        self.catalogue = tuple(catalogue)
        self.undo = undo                                           # may also remove an earlier transformation
        self.failed: dict[int, set[str]] = defaultdict(set)       # parent id -> transformations that failed
        self.failed_fingerprints: set[str] = set()
        self.notes: dict[int, list[str]] = defaultdict(list)       # parent id -> failures seen in repair

    def propose(self, ctx: ProposalContext) -> tuple[Proposal, Usage]:
        start = time.perf_counter()
        history = trials(ctx.records)
        chain, code = self.choose(ctx, history)
        proposal = self.write(ctx, history, chain, code)
        return proposal, Usage(seconds=round(time.perf_counter() - start, 4))

    def repair(self, ctx: ProposalContext, proposal: Proposal, failure: str) -> tuple[Proposal, Usage]:
        """Mutate cannot reason about a failure: it rules out what was applied and picks something else."""
        names = [parse_label(m)[0] for m in proposal.mutations]
        self.failed[ctx.parent.id].update(names)
        if proposal.code:
            self.failed_fingerprints.add(fingerprint(proposal.code))
        first_line = failure.strip().splitlines()[0] if failure.strip() else "no reason given"
        self.notes[ctx.parent.id].append(f"{', '.join(proposal.mutations)}: {first_line[:200]}")
        return self.propose(ctx)

    def choose(self, ctx: ProposalContext, history: list[Trial]) -> tuple[Chain, str]:
        """The transformations to apply and the resulting code, new to the workspace."""
        parent_code = ctx.parent_code
        anchors = locate(parent_code)
        if anchors is None:
            raise ProposalError(f"mutate: parent {ctx.parent.id} has no parsable `delta_rule_chunkwise` to transform",
                                kind="no_site")
        excluded = self.failed[ctx.parent.id]
        arms = [*self.catalogue, UNDO] if self.undo else list(self.catalogue)
        open_arms = [t for t in arms if t.name not in excluded and t.applies(parent_code, anchors)]
        if not open_arms:
            raise ProposalError(f"mutate: no transformation applies to parent {ctx.parent.id} "
                                f"({len(excluded)} ruled out after failures)", kind="no_transformation")
        seed = _seed(self.seed, ctx.parent.id, len(ctx.records), len(excluded))
        observations = [(n, tr.reward, 1.0) for tr in history for n in tr.names]
        priors = {t.name: sum(t.prior.values()) / len(TASKS) for t in arms}
        bandit = Bandit.from_observations([t.name for t in arms], observations, seed=seed, priors=priors,
                                          default_noise=PRIOR_NOISE)
        lookup = {t.name: t for t in open_arms}
        order = [lookup[n] for n in bandit.ranking(exclude={t.name for t in arms} - set(lookup))]
        rng = random.Random(seed)
        size = 1 if self.max_mutations == 1 or rng.random() < 0.5 else rng.randint(2, self.max_mutations)
        seen = set(ctx.existing_fingerprints) | self.failed_fingerprints | {fingerprint(parent_code)}

        def new(code: str | None) -> bool:
            return code is not None and fingerprint(code) not in seen and first_failure(check_static(code)) is None

        for first in order:
            for params in self.settings(first, parent_code, history, bandit, seed):
                single = first.apply(parent_code, params)
                if single is None:
                    continue
                chain: Chain = [(first, params)]
                code = single
                for other in order:
                    if len(chain) >= size:
                        break
                    options = self.settings(other, code, history, bandit, seed, avoid={t.name for t, _ in chain})
                    if other.name == first.name or not options:
                        continue
                    extra_params = options[0]
                    extra = other.apply(code, extra_params)
                    if new(extra):
                        chain.append((other, extra_params))
                        code = extra
                if new(code):
                    return chain, code
                if new(single):
                    return chain[:1], single
        raise ProposalError(f"mutate: every applicable transformation of parent {ctx.parent.id} gives code "
                            "that was tried before; choose another parent", kind="exhausted")

    def settings(self, t: Transformation | Removal, code: str, history: list[Trial], bandit: Bandit, seed: int,
                 avoid: set[str] = frozenset()) -> list[dict]:
        """The parameter settings of `t` in the order to try: the default first until one was measured,
        then as a bandit over the rewards of each setting ranks them. For `undo`: the transformations
        in `code` (except those in `avoid`), the one with the lowest estimated reward first."""
        if isinstance(t, Removal):
            names = [n for n in UNDO.blocks(code) if n not in avoid]
            estimate = {n: bandit.estimate(n) if n in bandit.stats else 0.0 for n in names}
            return [{"name": n} for n in sorted(names, key=lambda n: (estimate[n], n))]
        labels = [label(t.name, p) for p in t.grid]
        observations = [(lab, tr.reward, 1.0) for tr in history for lab in tr.labels if lab in labels]
        if not observations:
            return list(t.grid)
        ranked = Bandit.from_observations(labels, observations, seed=_seed(seed, t.name)).ranking()
        return [t.grid[labels.index(lab)] for lab in ranked]

    def write(self, ctx: ProposalContext, history: list[Trial], chain: Chain, code: str) -> Proposal:
        """The Proposal: a unique name, the rationale in both languages, predictions, the code."""
        anchors = locate(ctx.parent_code)
        parent = ctx.parent
        effects = {t.name: effect_of(t, params, history) for t, params in chain}
        predicted = predict(parent, effects.values())
        scored = [r for r in ctx.records if r.scored]
        best = max(scored, key=lambda r: (r.mean, -r.id)) if scored else None
        transforms = []
        for t, params in chain:
            target = t.target(ctx.parent_code, params) if isinstance(t, Removal) else t.target(anchors)
            transforms.append({
                "name": t.name, "family": t.family, "label": label(t.name, params), "params": params,
                "removed": params.get("name", "") if isinstance(t, Removal) else "",
                "removed_lesson": lesson(BY_NAME[params["name"]], history) if isinstance(t, Removal) else None,
                "line": target.line, "text": target.text, "state": anchors.state, "error": anchors.error,
                "attention": anchors.attention,
                "effect": [{"title": TASK_TITLES[k], "value": v} for k, v in effects[t.name].items() if abs(v) >= 5e-4],
            })
        lessons = [lesson(t, history) for t, _ in chain]
        siblings = [{"id": tr.child.id, "name": tr.child.name, "labels": list(tr.labels), "reward": tr.reward,
                     "status": tr.child.status} for tr in history if tr.parent.id == parent.id]
        values = dict(
            parent=_row(parent), best=_row(best), baseline=_row(ctx.baseline),
            best_per_task=[{"title": TASK_TITLES[k], "value": v} for k, v in ctx.best_per_task.items()
                           if k in TASK_TITLES],
            n_scored=len(scored), n_failed=sum(r.status in FAILED for r in ctx.records), transforms=transforms,
            predicted=[{"title": TASK_TITLES[k], "parent": parent.scores[k].mean, "predicted": v,
                        "delta": round(v - parent.scores[k].mean, 4) + 0.0} for k, v in predicted.items()],
            lessons=lessons, siblings=siblings, already=applied(ctx.parent_code),
            repair_notes=list(self.notes[parent.id]), n_trials=len(history),
        )
        sections = {s: Bilingual(en=render("mutate/rationale_en.j2", section=s, **values).strip(),
                                 zh=render("mutate/rationale_zh.j2", section=s, **values).strip())
                    for s in SECTIONS}
        return Proposal(name=self.name_for(chain, ctx.existing_names), predicted=predicted, code=code,
                        mutations=[label(t.name, p) for t, p in chain], **sections)

    @staticmethod
    def name_for(chain: Chain, existing: Iterable[str]) -> str:
        """delta_net_<transformations>, with a numeric suffix when the name is taken."""
        parts = [f"without_{p['name']}" if isinstance(t, Removal) else t.name for t, p in chain]
        return unique_name((NAME_PREFIX + "_and_".join(parts))[:72], existing)
