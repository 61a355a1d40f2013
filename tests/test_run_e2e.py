"""End to end: `archer run --budget 3` on a fresh folder, the real isolated worker on the smoke profile.

Slow (several minutes on a 2-core CPU): `pytest -m slow tests/test_run_e2e.py`.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.history import Workspace

ROOT = Path(__file__).resolve().parent.parent
ARCHER = Path(sys.executable).parent / "archer"


@pytest.mark.slow
def test_archer_run_records_three_candidates_with_complete_bilingual_reports(tmp_path):
    cmd = [str(ARCHER), "run", str(tmp_path / "history"), "--budget", "3"]
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "recorded 3 candidates; budget spent (candidates 3/3)" in proc.stdout + proc.stderr
    ws = Workspace.open(tmp_path / "history")
    records = ws.records()
    assert [c.id for c in records] == [0, 1, 2, 3]
    assert ws.config.eval.profile == "smoke"
    assert records[0].status == "ok" and records[0].profile == "smoke" and records[0].mean > 0
    for c in records[1:]:
        assert c.proposer == "mutate" and c.status in ("ok", "invalid", "timeout", "oom", "crashed", "nan")
        en, zh = ws.report(c.id).split("# 中文：")
        for h in ("## Key observations", "## Technical reasoning", "## Expected per-task", "## Outcome"):
            assert h in en
        for h in ("## 实验结果的关键观察", "## 修改的技术论证", "## 各任务的预期分数", "## 结果"):
            assert h in zh
        if c.status == "ok":
            assert "| Memorize |" in en and "| Memorize |" in zh
    assert ws.journal.pending() == {}
    assert (ws.path / ".archer" / "run.log").read_text().count(" record ") >= 4
