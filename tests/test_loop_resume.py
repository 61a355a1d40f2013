"""Stopping and resuming a real `Search` in a subprocess: SIGTERM or kill -9 mid-evaluation, Ctrl-C.

The LLM proposer talks over real HTTP to tests/openai_server.py in this process, so the tests can
count what was paid for: after a resume no proposal is asked for twice, the interrupted evaluation
runs again, and every candidate is recorded exactly once.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loop_support import llm_sections, new_workspace
from openai_server import FakeOpenAI, proposal_json, reply

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
UPDATE = "S = S + ks[n].transpose(-1, -2) @ u_n"

DRIVER = textwrap.dedent("""
    import hashlib, os, sys, time
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from agent.budget import Budget
    from agent.config import BudgetConfig
    from agent.history import Workspace
    from agent.llm_proposer import LLMProposer
    from agent.loop import Search
    from loop_support import fake_evaluate

    ws = Workspace.open(Path(sys.argv[1]))
    calls = Path(sys.argv[1]).parent / "evaluations.txt"

    def evaluate(code):
        with open(calls, "a") as f:
            f.write(hashlib.sha256(code.encode()).hexdigest() + "\\n")
        n = len(calls.read_text().splitlines())
        if n == int(os.environ.get("SLOW_AT", "0")):
            time.sleep(float(os.environ["SLOW_S"]))
        return fake_evaluate(code)

    proposer = LLMProposer(ws.config.proposer, base_delay_s=0.001)
    summary = Search(ws, proposer, evaluate, proposer_kind="llm",
                     budget=Budget(BudgetConfig(candidates=int(sys.argv[2])))).run()
    print("stopped:", summary.stopped, flush=True)
    sys.exit(128 + summary.signal if summary.signal else 0)
""")


@pytest.fixture
def server():
    """Answers every request with a new valid proposal (a different decay factor each time)."""
    with FakeOpenAI() as s:
        def answer(request):
            n = len(s.chat_requests)
            code = BASELINE.replace(UPDATE, f"S = 0.{90 + n} * S + ks[n].transpose(-1, -2) @ u_n")
            return reply(proposal_json(f"idea_{n}", code=code))
        s.default = answer
        yield s


BASELINE = (ROOT / "sandbox" / "naive.py").read_text()


def start(tmp_path, ws, budget, **env):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS)))
    full_env = {**os.environ, "ARCHER_TEST_KEY": "sk-test-resume", "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen([sys.executable, str(driver), str(ws.path), str(budget)], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_evaluations(tmp_path, n, proc, timeout=60.0):
    calls = tmp_path / "evaluations.txt"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if calls.exists() and len(calls.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early: {proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError("the evaluation never started")


def commits_per_candidate(ws) -> dict[str, int]:
    counts: dict[str, int] = {}
    for body in ws.repo.git.log("--format=%B%x00").split("\x00"):
        for line in body.splitlines():
            if line.startswith("Archer-Candidate: "):
                key = line.split(": ")[1]
                counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_mid_evaluation_then_resumed_loses_and_doubles_nothing(tmp_path, server, sig):
    ws = new_workspace(tmp_path / "ws", **llm_sections(server.base_url))
    proc = start(tmp_path, ws, budget=5, SLOW_AT="3", SLOW_S="60")
    wait_for_evaluations(tmp_path, 3, proc)            # baseline, 0001, and 0002 is being evaluated
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == (128 + sig if sig == signal.SIGTERM else -sig), out
    if sig == signal.SIGTERM:
        assert "SIGTERM received" in out
    paid = len(server.chat_requests)
    assert paid == 2
    pending = ws.journal.pending()
    assert list(pending) == ["cand-0002"] and pending["cand-0002"]["stage"] == "evaluate"

    proc = start(tmp_path, ws, budget=2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    ws = type(ws).open(ws.path)
    records = ws.records()
    assert [c.id for c in records] == [0, 1, 2, 3]
    assert all(c.status == "ok" for c in records) and len({c.name for c in records}) == 4
    assert len(server.chat_requests) == paid + 1       # 0002's proposal was not asked for again; 0003 was new
    evaluations = (tmp_path / "evaluations.txt").read_text().splitlines()
    assert len(evaluations) == 5 and evaluations[2] == evaluations[3]    # 0002 evaluated again
    assert commits_per_candidate(ws) == {"0000": 2, "0001": 1, "0002": 1, "0003": 1}
    assert ws.journal.pending() == {}


def test_ctrl_c_finishes_the_candidate_in_flight_then_stops(tmp_path, server):
    ws = new_workspace(tmp_path / "ws", **llm_sections(server.base_url))
    proc = start(tmp_path, ws, budget=5, SLOW_AT="2", SLOW_S="1.5")
    wait_for_evaluations(tmp_path, 2, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped by Ctrl-C" in out
    ws = type(ws).open(ws.path)
    assert [c.id for c in ws.records()] == [0, 1] and ws.get(1).status == "ok"
    assert ws.journal.pending() == {} and len(server.chat_requests) == 1
