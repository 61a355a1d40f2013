"""The proposal context read from a real workspace: table with best marks, reports, lessons, calibration."""
from agent.context import best_per_task, build_context, calibration, distill_lessons, english_part, results_table
from agent.records import TASKS, Candidate, Reason, Score
from agent.report import render_report
from loop_support import fake_evaluate, new_workspace


def scored(ws, id, parent, code, predicted=None, name=None):
    r = fake_evaluate(code)
    cand = Candidate(id=id, name=name or f"cand_{id}", parent=parent, proposer="mutate", status="ok",
                     profile="smoke", seeds=r.seeds, scores=r.scores, mean=r.mean, std=r.std,
                     predicted=predicted or {})
    ws.record(cand, code, render_report(cand, None, parent=ws.get(parent), baseline=ws.get(0)))
    return cand


def failed(ws, id, code, status, reason, message):
    cand = Candidate(id=id, name=f"failed_{id}", parent=0, proposer="mutate", status=status,
                     reasons=[Reason(code=reason, message=message)])
    ws.record(cand, code, render_report(cand, None, parent=ws.get(0), baseline=ws.get(0)))
    return cand


def workspace(tmp_path):
    ws = new_workspace(tmp_path / "ws")
    base = ws.code(0)
    r = fake_evaluate(base)
    ws.update(ws.get(0).model_copy(update=dict(status="ok", scores=r.scores, mean=r.mean, std=r.std, seeds=r.seeds)))
    one = scored(ws, 1, 0, base + "\n# one\nX = 1\n", predicted={t: 0.5 for t in TASKS})
    failed(ws, 2, base + "\nimport os\n", "rejected", "static.import", "line 9: `import os` is not allowed")
    failed(ws, 3, base + "\nY = 3\n", "invalid", "causality", "output before t=33 changed")
    failed(ws, 4, base + "\nimport sys\n", "rejected", "static.import", "line 9: `import sys` is not allowed")
    return ws, one


def test_context_carries_parent_code_table_reports_lessons_and_calibration(tmp_path):
    ws, one = workspace(tmp_path)
    ctx = build_context(ws, one, fingerprints=["abc"], reports=2)
    assert ctx.parent.id == 1 and ctx.parent_code == ws.code(1) and ctx.baseline.id == 0
    assert [c.id for c in ctx.records] == [0, 1, 2, 3, 4]
    assert "| 0001 | cand_1 |" in ctx.table and "rejected (static.import)" in ctx.table
    assert len(ctx.recent_reports) == 2 and ctx.recent_reports[-1].startswith("# 0004 failed_4")
    assert all("中文" not in r for r in ctx.recent_reports)
    assert ctx.lessons[0].startswith("static.import ×2") and "import sys" in ctx.lessons[0]
    assert ctx.lessons[1].startswith("causality ×1 (invalid")
    assert "mean abs error (n=1)" in ctx.calibration
    assert ctx.existing_names == sorted(ws.names()) and ctx.existing_fingerprints == ["abc"]
    assert ctx.best_per_task["mean"] == max(ws.get(0).mean, one.mean)


def test_best_score_per_task_is_marked_in_the_table(tmp_path):
    ws, one = workspace(tmp_path)
    records = ws.records()
    best = best_per_task(records)
    table = results_table(records)
    for t in TASKS:
        winner = max((c for c in records if c.scored), key=lambda c: c.scores[t].mean)
        assert f"{winner.scores[t].mean:.3f}*" in table
    assert table.count("*") >= len(TASKS) + 1 and best["mean"] == max(c.mean for c in records if c.scored)


def test_large_tables_keep_baseline_parent_best_and_latest():
    records = [Candidate(id=i, name=f"c{i}", parent=None if i == 0 else 0, proposer="mutate", status="ok",
                         scores={t: Score(mean=i / 100) for t in TASKS}, mean=i / 100) for i in range(100)]
    records[37] = records[37].model_copy(update={"mean": 0.99})
    table = results_table(records, keep=(12,), best_rows=5, latest_rows=5)
    shown = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| 0")]
    assert shown == ["0000", "0012", "0037", "0095", "0096", "0097", "0098", "0099"]
    assert "(92 more candidates not shown" in table


def test_calibration_reports_mean_absolute_and_signed_error():
    scores = {t: Score(mean=0.6) for t in TASKS}
    records = [Candidate(id=i, name=f"c{i}", parent=0, proposer="llm:m", status="ok", scores=scores, mean=0.6,
                         predicted={t: 0.6 + d for t in TASKS}) for i, d in ((1, 0.1), (2, -0.3))]
    text = calibration(records)
    assert "| 0001 | c1 | 0.700 → 0.600 |" in text
    assert "| | mean abs error (n=2) | 0.200 |" in text
    assert "| | mean error, measured − predicted | +0.100 |" in text
    assert "No past candidate" in calibration(records[:0])


def test_lessons_group_failures_by_reason_most_frequent_first():
    def bad(i, status, code):
        return Candidate(id=i, name=f"b{i}", parent=0, proposer="mutate", status=status,
                         reasons=[Reason(code=code, message=f"message {i}")])
    records = [bad(1, "nan", "nan"), bad(2, "invalid", "causality"), bad(3, "invalid", "causality"),
               bad(4, "timeout", "timeout"), bad(5, "invalid", "causality")]
    lessons = distill_lessons(records)
    assert lessons[0] == "causality ×3 (invalid; e.g. 0002 b2, 0003 b3, 0005 b5): message 5"
    assert [lesson.split(" ")[0] for lesson in lessons] == ["causality", "nan", "timeout"]


def test_english_part_of_a_bilingual_report(tmp_path):
    report = "# 0001 x\n\ntext\n\n# 中文：0001 x\n\n文本\n"
    assert english_part(report) == "# 0001 x\n\ntext"
    assert english_part("legacy insights without sections") == "legacy insights without sections"
