"""The loop with the REAL isolated worker: a causality leak is caught by its dynamic checks and recorded,
no API key reaches the evaluation, and stopping the controller kills a running worker."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.budget import Budget
from agent.config import BudgetConfig
from agent.evaluate import evaluate_code
from agent.llm_proposer import LLMProposer
from agent.loop import Search
from loop_support import fake_evaluate, llm_sections, new_workspace
from openai_server import FakeOpenAI, causality_leak, proposal_json, reply
from sandbox.isolation import scrubbed_env

ROOT = Path(__file__).resolve().parent.parent
CANARY = "sk-canary-4f1d2e9a7b"
SPIN = textwrap.dedent("""
    import torch


    def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
        n = 0
        while n >= 0:
            n = n + 1
        return q, q
""")


def scored_workspace(path, base_url):
    """A workspace whose baseline already has (stand-in) scores, so only the candidate meets the worker."""
    ws = new_workspace(path, **llm_sections(base_url), eval={"profile": "smoke", "timeout_s": 120})
    r = fake_evaluate(ws.code(0))
    ws.update(ws.get(0).model_copy(update=dict(status="ok", scores=r.scores, mean=r.mean, std=r.std, seeds=r.seeds)))
    return ws


def test_causality_leak_is_rejected_by_the_real_worker_and_no_key_reaches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHER_TEST_KEY", CANARY)
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    with FakeOpenAI() as server:
        ws = scored_workspace(tmp_path / "ws", server.base_url)
        server.script(reply(proposal_json("peeks_ahead", code=causality_leak(ws.code(0)))))
        proposer = LLMProposer(ws.config.proposer, base_delay_s=0.001)
        evaluate = lambda code: evaluate_code(code, ws.config.eval)  # noqa: E731
        summary = Search(ws, proposer, evaluate, proposer_kind="llm", budget=Budget(BudgetConfig(candidates=1))).run()
        assert server.chat_requests[0].authorization == f"Bearer {CANARY}"
    cand = ws.get(1)
    assert summary.recorded == [1]
    assert cand.status == "invalid" and cand.reasons[0].code == "causality"
    assert any(c.name == "causality" and not c.passed for c in cand.checks)
    assert "the output reads the future" in ws.report(1)
    recorded = "".join(p.read_text() for p in (ws.path / "candidates").rglob("*") if p.is_file())
    recorded += (ws.path / ".archer" / "run.log").read_text() if (ws.path / ".archer" / "run.log").exists() else ""
    assert CANARY not in recorded and CANARY not in json.dumps(cand.model_dump())
    assert CANARY not in json.dumps(scrubbed_env(tmp_path))


DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from agent.budget import Budget
    from agent.config import BudgetConfig
    from agent.evaluate import evaluate_code
    from agent.history import Workspace
    from agent.llm_proposer import LLMProposer
    from agent.loop import Search

    ws = Workspace.open(Path(sys.argv[1]))
    summary = Search(ws, LLMProposer(ws.config.proposer), lambda code: evaluate_code(code, ws.config.eval),
                     proposer_kind="llm", budget=Budget(BudgetConfig(candidates=1))).run()
    sys.exit(128 + summary.signal if summary.signal else 0)
""")


def workers_under(folder: Path) -> list[int]:
    """Pids of processes whose working directory lies under `folder` (the workers' temporary dirs)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(Path(os.readlink(entry / "cwd"))).startswith(str(folder)):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_sigterm_during_a_real_evaluation_kills_the_worker_and_keeps_the_journal(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with FakeOpenAI() as server:
        ws = scored_workspace(tmp_path / "ws", server.base_url)
        server.script(reply(proposal_json("spins_forever", code=SPIN)))
        driver = tmp_path / "driver.py"
        driver.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
        env = {**os.environ, "ARCHER_TEST_KEY": "sk-test", "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, str(driver), str(ws.path)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while not workers_under(tmp) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        workers = workers_under(tmp)
        assert workers, proc.communicate()[0] if proc.poll() is not None else "no worker started"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out
    time.sleep(0.5)
    assert workers_under(tmp) == []
    pending = ws.journal.pending()
    assert list(pending) == ["cand-0001"] and pending["cand-0001"]["stage"] == "evaluate"
    assert ws.records()[-1].id == 0
