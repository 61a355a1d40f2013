"""The loop with the LLM proposer over real HTTP (tests/openai_server.py): it survives every failure
of the model or the endpoint and records what happened; failures go back as bounded repair rounds."""
import pytest

from agent.budget import Budget
from agent.config import BudgetConfig
from agent.llm_proposer import LLMProposer
from agent.loop import Search
from loop_support import FAIL_MARKER, CountingEvaluate, llm_sections, new_workspace
from openai_server import (FakeOpenAI, error, proposal_json, proposal_text, reply, search_replace_text, slow,
                           wrong_signature)

STATE_UPDATE = "S = S + ks[n].transpose(-1, -2) @ u_n"


def variant(parent_code: str, factor: str) -> str:
    """The parent with a decayed state update: a real, valid change that static checks accept."""
    assert STATE_UPDATE in parent_code
    return parent_code.replace(STATE_UPDATE, f"S = {factor} * S + ks[n].transpose(-1, -2) @ u_n")


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("ARCHER_TEST_KEY", "sk-test-loop-key")


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


def run(tmp_path, server, *replies, candidates=1, tokens=None, evaluate=None, structured=True, **llm):
    ws = new_workspace(tmp_path / "ws", **llm_sections(server.base_url, structured_output=structured, **llm))
    server.script(*[r(ws.code(0)) if callable(r) else r for r in replies])
    proposer = LLMProposer(ws.config.proposer, base_delay_s=0.001, max_delay_s=0.01)
    evaluate = evaluate or CountingEvaluate()
    summary = Search(ws, proposer, evaluate, proposer_kind="llm", budget=Budget(BudgetConfig(candidates=candidates, tokens=tokens))).run()
    return ws, summary, evaluate


@pytest.mark.parametrize("form", ["json", "fenced", "search_replace", "bare"])
def test_good_reply_in_each_edit_format_is_evaluated_and_recorded(tmp_path, server, form):
    def answer(parent):
        code = variant(parent, "0.99")
        if form == "json":
            return reply(proposal_json("decayed_state", code=code))
        if form == "search_replace":
            return reply(search_replace_text("decayed_state", STATE_UPDATE, variant(STATE_UPDATE, "0.99")))
        return reply(proposal_text("decayed_state", code, fence=form == "fenced"))

    ws, summary, evaluate = run(tmp_path, server, answer, structured=form == "json")
    cand = ws.get(1)
    assert cand.status == "ok" and cand.name == "decayed_state" and cand.proposer == "llm:fake/fake-small"
    assert evaluate.codes[-1] == ws.code(1) and "0.99 * S" in ws.code(1)
    assert cand.usage.calls == 1 and cand.usage.prompt_tokens > 0 and cand.usage.cost_usd > 0
    en, zh = ws.report(1).split("# 中文：")
    assert "bounding the error term" in en and "限制误差项" in zh
    assert "LLM usage: 1 call" in en


@pytest.mark.parametrize("bad, kind", [
    (reply('{"name": "broken", "observations": {"en": "unterminated'), "proposal.malformed_json"),
    (reply(proposal_json("nothing_to_run", code=None)), "proposal.no_code"),
    (reply(proposal_json("cut_off", code="import torch\n")[:120], finish_reason="length"), "proposal.truncated"),
    (reply("I'm sorry, but I can't help with that request."), "proposal.refused"),
])
def test_unusable_reply_is_recorded_as_rejected_and_the_search_goes_on(tmp_path, server, bad, kind):
    good = lambda parent: reply(proposal_json("after_the_failure", code=variant(parent, "0.98")))  # noqa: E731
    ws, summary, evaluate = run(tmp_path, server, bad, good, candidates=2, structured=False)
    first, second = ws.get(1), ws.get(2)
    assert first.status == "rejected" and first.reasons[0].code == kind
    assert first.name == "proposal_failed_0001" and ws.code(1) == ws.code(0)
    assert "The proposer's raw reply" in ws.report(1) and "提出者的原始回复" in ws.report(1)
    assert second.status == "ok" and second.name == "after_the_failure"
    assert len(evaluate.codes) == 2                    # baseline and the good one: nothing else reached the worker


def test_wrong_signature_is_sent_back_and_the_repair_is_recorded(tmp_path, server):
    ws, summary, evaluate = run(
        tmp_path, server,
        lambda parent: reply(proposal_json("no_beta", code=wrong_signature(parent))),
        lambda parent: reply(proposal_json("no_beta", code=variant(parent, "0.97"))))
    cand = ws.get(1)
    assert cand.status == "ok" and "0.97 * S" in ws.code(1)
    repair_prompt = server.chat_requests[1].text()
    assert "static.signature" in repair_prompt
    en, zh = ws.report(1).split("# 中文：")
    assert "sent back for repair 1 time" in en and "static.signature" in en and "static.signature" in zh


def test_check_failures_beyond_the_repair_rounds_are_recorded_as_rejected(tmp_path, server):
    bad = lambda parent: reply(proposal_json("no_beta", code=wrong_signature(parent)))  # noqa: E731
    ws, summary, evaluate = run(tmp_path, server, bad, bad, repair_rounds=1)
    cand = ws.get(1)
    assert cand.status == "rejected" and cand.reasons[0].code == "static.signature"
    assert len(server.chat_requests) == 2 and len(evaluate.codes) == 1
    assert "def delta_rule_chunkwise(q, k, v, chunk_size=32)" in ws.code(1)
    assert "sent back for repair 1 time:" in ws.report(1)


def test_duplicate_is_sent_back_once_then_rejected(tmp_path, server):
    same = lambda parent: reply(proposal_json("nothing_new", code=parent.replace("    C = chunk_size", "    C = chunk_size  # same")))  # noqa: E501,E731
    ws, summary, evaluate = run(tmp_path, server, same, same, repair_rounds=5)
    cand = ws.get(1)
    assert cand.status == "rejected" and cand.reasons[0].code == "duplicate"
    assert "0000 baseline" in cand.reasons[0].message
    assert len(server.chat_requests) == 2              # once back, then recorded, whatever the repair rounds


@pytest.mark.parametrize("transient", [error(429, "slow down", retry_after=0), error(500, "upstream failed")])
def test_transient_http_errors_are_retried_and_the_proposal_recorded(tmp_path, server, transient):
    ws, summary, evaluate = run(tmp_path, server, transient,
                                lambda parent: reply(proposal_json("after_retry", code=variant(parent, "0.96"))))
    cand = ws.get(1)
    assert cand.status == "ok" and cand.usage.retries == 1 and len(server.chat_requests) == 2


def test_slow_answer_past_the_timeout_is_retried(tmp_path, server):
    ws, summary, evaluate = run(
        tmp_path, server, lambda parent: slow(1.5, reply(proposal_json("late", code=variant(parent, "0.95")))),
        lambda parent: reply(proposal_json("in_time", code=variant(parent, "0.94"))), timeout_s=0.5)
    assert ws.get(1).status == "ok" and ws.get(1).name == "in_time"


def test_endpoint_that_keeps_failing_is_recorded_and_does_not_stop_the_search(tmp_path, server):
    ws, summary, evaluate = run(tmp_path, server, error(500), error(500), error(500),
                                lambda parent: reply(proposal_json("recovered", code=variant(parent, "0.93"))),
                                candidates=2, max_retries=2)
    first = ws.get(1)
    assert first.status == "rejected" and first.reasons[0].code == "proposal.endpoint"
    assert "gave up after 3 attempts" in first.reasons[0].message and first.usage.retries == 2
    assert ws.get(2).status == "ok"


def test_failed_evaluation_goes_back_to_the_llm_as_a_new_linked_candidate(tmp_path, server):
    ws, summary, evaluate = run(
        tmp_path, server,
        lambda parent: reply(proposal_json("crashes", code=variant(parent, "0.9") + f"\n{FAIL_MARKER}\n")),
        lambda parent: reply(proposal_json("crashes_fixed", code=variant(parent, "0.91"))), candidates=2)
    failed, fixed = ws.get(1), ws.get(2)
    assert failed.status == "crashed" and failed.reasons[0].code == "worker_died"
    assert fixed.status == "ok" and fixed.parent == failed.parent == 0
    assert "RuntimeError: boom" in server.chat_requests[1].text()
    assert "It repairs 0001 crashes" in ws.report(2) and "本候选修复 0001 crashes" in ws.report(2)


def test_token_budget_stops_the_search(tmp_path, server):
    ws, summary, evaluate = run(tmp_path, server,
                                lambda parent: reply(proposal_json("costly", code=variant(parent, "0.92"))),
                                candidates=None, tokens=1)
    assert summary.recorded == [1] and summary.stopped.startswith("budget spent (tokens")


def test_a_name_already_taken_gets_a_numeric_suffix_and_the_endpoint_bandit_learns(tmp_path, server):
    same_name = [lambda parent, f=f: reply(proposal_json("decayed_state", code=variant(parent, f)))
                 for f in ("0.99", "0.98")]
    ws = new_workspace(tmp_path / "ws", **llm_sections(server.base_url))
    server.script(*[r(ws.code(0)) for r in same_name])
    proposer = LLMProposer(ws.config.proposer, base_delay_s=0.001)
    Search(ws, proposer, CountingEvaluate(), proposer_kind="llm", budget=Budget(BudgetConfig(candidates=2))).run()
    assert [c.name for c in ws.records()[1:]] == ["decayed_state", "decayed_state_2"]
    assert proposer.bandit.stats["fake"].pulls == 2
