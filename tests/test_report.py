"""The bilingual insight report: rationale in both languages and an outcome computed from the data."""
import math
import statistics

import pytest

from agent.proposal import Bilingual, Proposal
from agent.records import TASKS, Candidate, Reason, Score
from agent.report import NOISE_PRIOR, SIGNIFICANCE, difference, outcome_rows, render_report

EN_HEADINGS = ("## Key observations", "## Code issues", "## Technical reasoning", "## Expected per-task",
               "## Lessons from the history", "## How it builds on", "## Name", "## Outcome")
ZH_HEADINGS = ("## 实验结果的关键观察", "## 发现的代码问题", "## 修改的技术论证", "## 各任务的预期分数",
               "## 历史经验", "## 与历史尝试的关系", "## 名称", "## 结果")


def score(*vals):
    return Score(mean=sum(vals) / len(vals), std=statistics.stdev(vals) if len(vals) > 1 else 0.0,
                 per_seed=list(vals))


def scored(id, per_task, parent=0, seeds=(0,), predicted=None, name=None):
    scores = {t: score(*per_task[t]) if isinstance(per_task, dict) else score(*per_task) for t in TASKS}
    per_seed_means = [sum(scores[t].per_seed[i] for t in TASKS) / 6 for i in range(len(seeds))]
    return Candidate(id=id, name=name or f"cand_{id}", parent=None if id == 0 else parent,
                     proposer="baseline" if id == 0 else "mutate", status="ok", profile="smoke",
                     seeds=list(seeds), scores=scores, mean=sum(per_seed_means) / len(per_seed_means),
                     std=statistics.stdev(per_seed_means) if len(seeds) > 1 else 0.0, predicted=predicted or {})


def proposal(name="tanh_on_error", predicted=None):
    b = lambda s: Bilingual(en=f"english {s} text", zh=f"中文{s}内容")
    return Proposal(name=name, observations=b("observations"), code_issues=b("issues"), reasoning=b("reasoning"),
                    expected=b("expected"), lessons=b("lessons"), builds_on=b("builds"),
                    predicted=predicted or {}, code="def f(): pass")


def halves(report):
    en, zh = report.split("# 中文：")
    return en, zh


def test_difference_combines_the_seed_spreads_of_both_sides():
    a, b = score(0.60, 0.64, 0.62), score(0.50, 0.52)
    d = difference(a, b, "compress")
    assert d.delta == pytest.approx(0.11)
    assert d.sigma == pytest.approx(math.sqrt(0.02 ** 2 / 3 + statistics.stdev([0.50, 0.52]) ** 2 / 2))
    assert not d.prior and d.exceeds


def test_single_seed_difference_uses_the_calibration_prior():
    d = difference(score(0.60), score(0.58), "memorize")
    assert d.prior
    assert SIGNIFICANCE * d.sigma == pytest.approx(NOISE_PRIOR["memorize"])
    assert not d.exceeds                      # 0.02 on Memorize is well inside run-to-run noise
    assert difference(score(0.60), score(0.50), "compress").exceeds   # 0.10 > 0.045 on Compress


def test_outcome_rows_hold_prediction_error_and_differences_per_task_and_mean():
    base = scored(0, [0.5])
    parent = scored(1, [0.55, 0.56], seeds=(0, 1))
    cand = scored(2, [0.60, 0.62], parent=1, seeds=(0, 1), predicted={t: 0.58 for t in TASKS})
    rows = outcome_rows(cand, parent, base)
    assert [r.key for r in rows] == [*TASKS, "mean"]
    r = rows[0]
    assert r.error == pytest.approx(0.03)
    assert r.vs_parent.delta == pytest.approx(0.055) and not r.vs_parent.prior
    assert r.vs_baseline.delta == pytest.approx(0.11) and r.vs_baseline.prior
    assert rows[-1].measured.mean == pytest.approx(0.61) and rows[-1].predicted == pytest.approx(0.58)


def test_report_is_complete_in_english_then_chinese():
    base = scored(0, [0.5])
    cand = scored(3, {t: [0.5 + 0.01 * i] for i, t in enumerate(TASKS)}, predicted={t: 0.5 for t in TASKS},
                  name="tanh_on_error")
    report = render_report(cand, proposal(predicted=cand.predicted), parent=base, baseline=base)
    en, zh = halves(report)
    for h in EN_HEADINGS:
        assert h in en and h not in zh
    for h in ZH_HEADINGS:
        assert h in zh
    for s in ("observations", "issues", "reasoning", "expected", "lessons", "builds"):
        assert f"english {s} text" in en and f"english {s} text" not in zh
        assert f"中文{s}内容" in zh and f"中文{s}内容" not in en
    assert en.count("tanh_on_error") >= 2 and zh.count("tanh_on_error") >= 2
    assert "| Selective Copy | 0.500 | 0.550 | +0.050 | +0.050 ± 0.021ᵖ | better |" in en
    assert "| Selective Copy | 0.500 | 0.550 | +0.050 | +0.050 ± 0.021ᵖ | 更好 |" in zh
    assert "| Compress | 0.500 | 0.500 | +0.000 | +0.000 ± 0.022ᵖ | within noise |" in en
    assert "| Context Recall | 0.500 | 0.510 | +0.010 | +0.010 ± 0.0004ᵖ | better |" in en
    assert "| mean | 0.500 | 0.525 | +0.025 | +0.025 ± 0.016ᵖ | within noise |" in en
    assert "| 平均 | 0.500 | 0.525 |" in zh
    assert "calibration.md" in en and "calibration.md" in zh


def test_report_of_a_rejected_candidate_names_its_reasons_in_both_languages():
    base = scored(0, [0.5])
    cand = Candidate(id=4, name="leaky", parent=0, proposer="mutate", status="rejected",
                     reasons=[Reason(code="static.import", message="line 3: import os is not allowed")])
    en, zh = halves(render_report(cand, proposal("leaky"), parent=base, baseline=base))
    for half in (en, zh):
        assert "`static.import`" in half and "import os is not allowed" in half
        assert "| Compress |" not in half
    assert "rejected before any training" in en and "训练之前即被拒绝" in zh


def test_report_of_a_failed_proposal_shows_the_raw_reply_and_worker_log():
    base = scored(0, [0.5])
    cand = Candidate(id=5, name="proposal_failed_0005", parent=0, proposer="llm:m", status="rejected",
                     reasons=[Reason(code="proposal.malformed", message="reply is not valid JSON")])
    report = render_report(cand, None, parent=base, baseline=base, reply_excerpt='{"name": "x", ```oops')
    en, zh = halves(report)
    for half in (en, zh):
        assert "proposal.malformed" in half and '{"name": "x", \'\'\'oops' in half
    assert "## Key observations" not in en


def test_baseline_report_has_no_comparison_columns():
    base = scored(0, [0.5])
    en, zh = halves(render_report(base, None, parent=None, baseline=base))
    assert "| task | measured |" in en and "| 任务 | 实测 |" in zh
    assert "vs parent" not in en and "reference point" in en


def test_failed_evaluation_shows_the_log_tail():
    base = scored(0, [0.5])
    cand = Candidate(id=6, name="nan_maker", parent=0, proposer="mutate", status="nan",
                     reasons=[Reason(code="nan", message="loss became nan at step 12")],
                     log_tail="step 12 loss nan\n")
    en, zh = halves(render_report(cand, proposal("nan_maker"), parent=base, baseline=base))
    assert "step 12 loss nan" in en and "step 12 loss nan" in zh
    assert "status **nan**" in en


def test_scores_on_another_profile_are_not_subtracted():
    base = scored(0, [0.5]).model_copy(update={"profile": "screen"})
    cand = scored(1, [0.6])
    en, zh = halves(render_report(cand, proposal("x"), parent=base, baseline=base))
    assert "vs parent" not in en and "| task | measured |" in en
    assert "0000 cand_0 was scored on the `screen` profile" in en and "`screen` 评测配置" in zh
