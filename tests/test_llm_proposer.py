"""The LLM proposer end to end over real HTTP: prompts, formats, fallbacks, failures, repair, endpoint bandit."""
import json
from pathlib import Path

import pytest

from agent.config import Endpoint, ProposerConfig
from agent.context import ProposalContext
from agent.errors import ArcherError, ProposalError
from agent.llm_proposer import LLMProposer, improvement
from agent.prompts import render
from agent.records import TASKS, Candidate, Score, Usage
from openai_server import (FakeOpenAI, causality_leak, error, proposal_json, proposal_text, reply,
                           search_replace_text, slow, wrong_signature)
from sandbox.static_checks import check_signature, parse

PARENT = (Path(__file__).resolve().parent.parent / "sandbox" / "naive.py").read_text()
NEW_CODE = PARENT.replace("    q = q * Dk ** -0.5\n", "    q = q * Dk ** -0.5\n    beta = beta.clamp(max=0.9)\n")


def scored(id, name, mean, parent=None, usage=None) -> Candidate:
    return Candidate(id=id, name=name, parent=parent, proposer="llm" if usage else "baseline", status="ok",
                     scores={t: Score(mean=mean) for t in TASKS}, mean=mean, usage=usage or Usage())


@pytest.fixture
def ctx() -> ProposalContext:
    base = scored(0, "delta_net", 0.668)
    return ProposalContext(
        parent=base, parent_code=PARENT, baseline=base, records=[base],
        table="| id | name | Compress | mean |\n|---|---|---|---|\n| 0000 | delta_net | 0.487* | 0.668* |",
        best_per_task={"compress": 0.487, "mean": 0.668},
        recent_reports=["# 0003 tanh_on_error\nBounded errors helped Fuzzy Recall."],
        lessons=["causality ×2 (invalid; e.g. 0004 future_mean): output before t changed"],
        calibration="| 0003 | tanh_on_error | 0.500 → 0.480 |", existing_names=["delta_net", "tanh_on_error"])


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    with FakeOpenAI() as s:
        yield s


def endpoint(server, name="cheap", **kw) -> Endpoint:
    return Endpoint(name=name, base_url=server.base_url, model=f"model-{name}", api_key_env="FAKE_KEY",
                    timeout_s=kw.pop("timeout_s", 5.0), **kw)


def proposer(*endpoints, max_retries=2, **kw) -> LLMProposer:
    config = ProposerConfig(kind="llm", endpoints=list(endpoints), max_retries=max_retries)
    return LLMProposer(config, base_delay_s=0.001, max_delay_s=0.01, **kw)


def test_structured_proposal_carries_the_context_in_its_prompt(server, ctx):
    server.script(reply(proposal_json("clamp_beta", code=NEW_CODE), prompt_tokens=900, completion_tokens=300))
    p, usage = proposer(endpoint(server, price_in_per_mtok=1.0, price_out_per_mtok=4.0)).propose(ctx)
    assert p.name == "clamp_beta" and p.resolve_code(PARENT) == NEW_CODE
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (1, 900, 300)
    assert usage.cost_usd == pytest.approx(900e-6 + 1200e-6) and usage.model == "cheap/model-cheap"
    request = server.chat_requests[0]
    assert request.response_format["type"] == "json_schema"
    system, user = request.messages[0]["content"], request.messages[1]["content"]
    assert "torch, math, einops, typing, functools" in system
    assert "def delta_rule_chunkwise(q, k, v, beta, chunk_size=32)" in system
    assert "Selective Copy" in system and "Causality" in system
    for part in (ctx.table, ctx.lessons[0], ctx.calibration, ctx.recent_reports[0], "tanh_on_error",
                 "beta = rearrange(beta"):
        assert part in user


@pytest.mark.parametrize("text", [
    proposal_text("clamp_beta", NEW_CODE),
    proposal_text("clamp_beta", NEW_CODE, fence=False),
    search_replace_text("clamp_beta", "    q = q * Dk ** -0.5", "    q = q * Dk ** -0.5\n    beta = beta.clamp(max=0.9)"),
], ids=["fenced", "bare", "search_replace"])
def test_free_text_endpoint_gets_every_edit_format_parsed(server, ctx, text):
    server.script(reply(text))
    p, _ = proposer(endpoint(server, structured_output=False)).propose(ctx)
    assert p.resolve_code(PARENT).strip() == NEW_CODE.strip()
    request = server.chat_requests[0]
    assert request.response_format is None
    assert "## 观察" in request.messages[0]["content"]


def test_rejected_structured_output_falls_back_to_text_and_is_remembered(server, ctx):
    server.script(error(400, "response_format json_schema is not supported by this model", param="response_format"),
                  reply(proposal_text("clamp_beta", NEW_CODE)), reply(proposal_text("clamp_beta_2", NEW_CODE)))
    llm = proposer(endpoint(server))
    assert llm.propose(ctx)[0].name == "clamp_beta"
    assert llm.propose(ctx)[0].name == "clamp_beta_2"
    formats = [r.response_format for r in server.chat_requests]
    assert formats[0]["type"] == "json_schema" and formats[1:] == [None, None]


def test_endpoint_ignoring_the_schema_is_parsed_and_remembered(server, ctx):
    server.script(reply(proposal_text("clamp_beta", NEW_CODE)), reply(proposal_text("clamp_beta_2", NEW_CODE)))
    llm = proposer(endpoint(server))
    llm.propose(ctx)
    llm.propose(ctx)
    assert server.chat_requests[1].response_format is None


@pytest.mark.parametrize("script, kind", [
    (reply('{"name": "broken", "code": "import torch" "reasoning": }'), "malformed_json"),
    (reply("name: idea\n## Reasoning\nr\n## Expected\ne\n"), "no_code"),
    (reply("I'm sorry, but I can't help with that."), "refused"),
    (reply(proposal_text("clamp_beta", NEW_CODE)[:400], "length"), "truncated"),
], ids=["malformed_json", "no_code", "refusal", "truncated"])
def test_unusable_replies_end_in_one_line_error_with_usage(server, ctx, script, kind):
    server.script(script)
    with pytest.raises(ProposalError) as info:
        proposer(endpoint(server, structured_output=False)).propose(ctx)
    e = info.value
    assert e.kind == kind and "\n" not in str(e)
    assert e.usage.calls == 1 and e.usage.prompt_tokens > 0
    assert e.raw


def test_rate_limit_then_success_records_the_retry(server, ctx):
    server.script(error(429, "rate limited", retry_after=0.05), reply(proposal_json("clamp_beta", code=NEW_CODE)))
    p, usage = proposer(endpoint(server)).propose(ctx)
    assert p.name == "clamp_beta" and usage.retries == 1 and usage.calls == 1


def test_server_error_then_success(server, ctx):
    server.script(error(502, "bad gateway"), reply(proposal_json("clamp_beta", code=NEW_CODE)))
    assert proposer(endpoint(server)).propose(ctx)[1].retries == 1


def test_timeouts_until_exhaustion_name_the_timeout(server, ctx):
    server.default = slow(2.0, reply(proposal_json("late", code=NEW_CODE)))
    with pytest.raises(ProposalError, match="timeout after 0.2 s") as info:
        proposer(endpoint(server, timeout_s=0.2), max_retries=1).propose(ctx)
    assert info.value.usage.retries == 1 and len(server.chat_requests) == 2


def test_missing_chinese_is_requested_once_and_merged(server, ctx):
    english_only = json.loads(proposal_json("clamp_beta", code=NEW_CODE, zh=False))
    server.script(reply(json.dumps(english_only)),
                  reply(json.dumps({k: f"中文 {k}" for k in english_only if isinstance(english_only[k], dict)})))
    p, usage = proposer(endpoint(server)).propose(ctx)
    assert p.reasoning.zh == "中文 reasoning" and p.builds_on.zh == "中文 builds_on"
    assert usage.calls == 2
    assert "bounding the error term" in server.chat_requests[1].text()


def test_missing_chinese_after_asking_is_an_error(server, ctx):
    server.script(reply(proposal_json("clamp_beta", code=NEW_CODE, zh=False)), reply("Sorry, no."))
    with pytest.raises(ProposalError, match="lacks Chinese") as info:
        proposer(endpoint(server)).propose(ctx)
    assert info.value.kind == "missing_chinese" and info.value.usage.calls == 2


def test_repair_sends_the_failure_and_the_failed_code_to_the_same_endpoint(server, ctx):
    cheap, strong = endpoint(server, "cheap"), endpoint(server, "strong")
    llm = proposer(cheap, strong)
    server.script(reply(proposal_json("drop_beta", code=wrong_signature(PARENT))))
    bad, _ = llm.propose(ctx)
    finding = check_signature(parse(bad.resolve_code(PARENT)))
    assert not finding.passed
    server.script(reply(proposal_json("drop_beta", code=NEW_CODE)))
    fixed, usage = llm.repair(ctx, bad, finding.message)
    assert fixed.resolve_code(PARENT) == NEW_CODE and usage.calls == 1
    first, second = server.chat_requests
    assert first.body["model"] == second.body["model"]
    assert finding.message in second.text() and "_parent_delta_rule_chunkwise" in second.text()


def test_repair_of_edits_that_do_not_apply_shows_the_edits(server, ctx):
    server.script(reply(search_replace_text("clamp_beta", "no such line", "x = 1")),
                  reply(proposal_text("clamp_beta", NEW_CODE)))
    llm = proposer(endpoint(server, structured_output=False))
    bad, _ = llm.propose(ctx)
    with pytest.raises(ProposalError) as info:
        bad.resolve_code(PARENT)
    fixed, _ = llm.repair(ctx, bad, str(info.value))
    assert fixed.code.strip() == NEW_CODE.strip()
    assert "<<<<<<< SEARCH\nno such line" in server.chat_requests[1].text()


def test_causality_leak_reply_is_returned_for_the_dynamic_check(server, ctx):
    server.script(reply(proposal_json("future_mean", code=causality_leak(PARENT))))
    p, _ = proposer(endpoint(server)).propose(ctx)
    assert "v.mean(dim=2, keepdim=True)" in p.resolve_code(PARENT)


def test_bandit_prefers_the_endpoint_that_buys_more_improvement_per_cost(server, ctx):
    llm = proposer(endpoint(server, "cheap"), endpoint(server, "strong"))
    for _ in range(5):
        llm.observe("cheap", 0.0, 1.0)
        llm.observe("strong", 0.02, 1.0)
    server.default = reply(proposal_json("clamp_beta", code=NEW_CODE))
    for _ in range(10):
        llm.propose(ctx)
    models = [r.body["model"] for r in server.chat_requests]
    assert models.count("model-strong") > models.count("model-cheap")


def test_bandit_is_rebuilt_from_the_history_records(server):
    cheap, strong = endpoint(server, "cheap"), endpoint(server, "strong")
    spend = dict(calls=1, prompt_tokens=1000, completion_tokens=1000)
    records = [scored(0, "delta_net", 0.60),
               scored(1, "a", 0.65, 0, Usage(model="strong/model-strong", **spend)),
               scored(2, "b", 0.55, 0, Usage(model="cheap/model-cheap", **spend)),
               scored(3, "c", 0.70, 1, Usage(model="strong/model-strong", **spend))]
    llm = LLMProposer.from_history(ProposerConfig(kind="llm", endpoints=[cheap, strong]), records)
    assert llm.bandit.stats["strong"].pulls == 2 and llm.bandit.stats["cheap"].pulls == 1
    assert llm.bandit.estimate("strong") > llm.bandit.estimate("cheap")
    assert improvement(records[2], records[0]) == 0.0
    assert improvement(records[3], records[1]) == pytest.approx(0.05)


def test_a_proposer_needs_endpoints_with_unique_names(server):
    with pytest.raises(ArcherError, match="at least one"):
        LLMProposer(ProposerConfig(kind="llm"))
    with pytest.raises(ArcherError, match="unique"):
        proposer(endpoint(server, "same"), endpoint(server, "same"))


def test_prompt_templates_refuse_missing_variables(ctx):
    with pytest.raises(ArcherError, match="undefined"):
        render("propose.j2", ctx=ctx)
    with pytest.raises(ArcherError, match="not found"):
        render("no_such_template.j2")
