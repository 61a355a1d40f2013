"""A small real workspace for the site tests: git-backed, bilingual reports, a rejected and a reverted candidate.

Candidates: 0 baseline, 1 gated_delta_net (reference), 2 tanh_on_error, 3 softmax_intra_chunk (LLM,
with checks, settings and cost), 4 forbidden_gate (rejected), 5 decay_state (reverted), 6 unstable_gate (nan).
"""
from __future__ import annotations

import statistics
from pathlib import Path

from agent.history import Workspace
from agent.proposal import Bilingual, Proposal
from agent.records import TASKS, Candidate, CheckFinding, Reason, Score, SettingScore, Usage
from agent.report import render_report

BASE = {"compress": 0.45, "context_recall": 0.99, "fuzzy_recall": 0.22, "memorize": 0.38,
        "noisy_recall": 0.99, "selective_copy": 0.95}
REVERT_REASON = "did not reproduce with seeds 1, 2"


def scored(id: int, name: str, parent: int | None, shift: float, proposer: str = "mutate",
           model: str = "delta_net", **extra) -> Candidate:
    seeds = [0, 1]
    scores = {}
    for i, t in enumerate(TASKS):
        per = [min(1.0, BASE[t] + shift + 0.01 * s - 0.002 * i) for s in seeds]
        scores[t] = Score(mean=statistics.mean(per), std=statistics.stdev(per), per_seed=per)
    per_seed_means = [statistics.mean(scores[t].per_seed[k] for t in TASKS) for k in range(len(seeds))]
    return Candidate(id=id, name=name, parent=parent, proposer=proposer, status="ok", profile="smoke", model=model,
                     seeds=seeds, scores=scores, mean=statistics.mean(per_seed_means),
                     std=statistics.stdev(per_seed_means), timings={"total_s": 40.0 + id}, **extra)


def proposal(name: str, idea_en: str, idea_zh: str) -> Proposal:
    def b(en: str, zh: str) -> Bilingual:
        return Bilingual(en=f"{en} {idea_en}", zh=f"{zh}{idea_zh}")
    return Proposal(name=name, observations=b("The table shows", "结果表显示"),
                    code_issues=b("The parent's error term is unbounded;", "父候选的误差项没有上界；"),
                    reasoning=b("Bounding it keeps the sign of the correction;", "限制它可以保留修正的方向；"),
                    expected=b("Compress and Memorize should gain;", "Compress 和 Memorize 应该提升；"),
                    lessons=b("Earlier rescalings of S helped little;", "之前对 S 的重缩放帮助不大；"),
                    builds_on=b("It builds on the parent;", "它建立在父候选之上；"),
                    predicted={t: BASE[t] + 0.02 for t in TASKS}, code="")


def make_workspace(path: Path) -> Workspace:
    ws = Workspace.init(path)
    code0 = ws.code(0)
    base = scored(0, "baseline", None, 0.0, proposer="baseline")
    ws.update(base, render_report(base, None, parent=None, baseline=None))

    def add(cand: Candidate, code: str, prop: Proposal | None = None) -> Candidate:
        parent = ws.get(cand.parent) if cand.parent is not None else None
        ws.record(cand, code, render_report(cand, prop, parent=parent, baseline=ws.get(0)))
        return cand

    add(scored(1, "gated_delta_net", 0, 0.02, proposer="reference", model="gated_delta_net"), code0)
    code2 = code0.replace("    q = q * Dk ** -0.5\n", "    q = q * Dk ** -0.5\n    v = torch.tanh(v)  # <bounded>\n")
    p2 = proposal("tanh_on_error", "tanh bounds each element to (-1, 1).", "tanh 把每个元素限制在 (-1, 1)。")
    add(scored(2, "tanh_on_error", 0, 0.03, predicted=p2.predicted, mutations=["tanh_on_error"]), code2, p2)
    code3 = code2 + "\n\ndef _softmax_chunk(x):\n    return torch.softmax(x, dim=-1)\n"
    p3 = proposal("softmax_intra_chunk", "A causal softmax inside each chunk.", "在每个块内使用因果 softmax。")
    add(scored(3, "softmax_intra_chunk", 2, 0.05, proposer="llm:test-model", predicted=p3.predicted,
               checks=[CheckFinding(name="causality", passed=True, seconds=0.2),
                       CheckFinding(name="subquadratic", passed=True, seconds=1.1)],
               settings=[SettingScore(task=t, setting="baseline", seed=s, lr=1e-3, weight_decay=0.0, accuracy=0.9,
                                      token_accuracy=0.9, steps=100, best_step=90, seconds=3.0)
                         for t in TASKS for s in (0, 1)],
               usage=Usage(calls=2, prompt_tokens=9000, completion_tokens=2500, cost_usd=0.0123,
                           model="test-model")), code3, p3)
    add(Candidate(id=4, name="forbidden_gate", parent=2, proposer="mutate", status="rejected",
                  reasons=[Reason(code="static.forbidden_name", message="uses `open`, which is not allowed")]),
        code2 + "\nopen('x')\n")
    add(scored(5, "decay_state", 3, 0.06), code3 + "\n# decay 0.99\n")
    ws.revert(5, REVERT_REASON)
    add(Candidate(id=6, name="unstable_gate", parent=3, proposer="mutate", status="nan",
                  reasons=[Reason(code="nan", message="loss became NaN at step 12")],
                  log_tail="step 11 loss 2.31\nstep 12 loss nan\n<script>alert(1)</script>\n"),
        code3 + "\n# gate without bound\n")
    return ws
