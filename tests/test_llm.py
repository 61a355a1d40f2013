"""The LLM seam over real HTTP (tests/openai_server.py): keys, usage and cost, retries, fallbacks."""
import pytest

from agent.config import Endpoint
from agent.errors import ConfigError, ProposalError
from agent.llm import LLMClient, StructuredOutputRejected
from openai_server import FakeOpenAI, Reply, error, reply, slow

MESSAGES = [{"role": "user", "content": "propose something"}]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
          "additionalProperties": False}


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("ARCHER_TEST_KEY", "sk-test-configured-key")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-some-other-key")


def client(server, *, max_retries=3, timeout_s=5.0, **endpoint) -> LLMClient:
    ep = Endpoint(name="fake", base_url=server.base_url, model="fake-small", api_key_env="ARCHER_TEST_KEY",
                  timeout_s=timeout_s, **endpoint)
    return LLMClient(ep, max_retries=max_retries, base_delay_s=0.001, max_delay_s=0.01)


def test_completion_returns_text_usage_and_cost(server):
    server.script(reply("hello", prompt_tokens=1000, completion_tokens=500))
    c = client(server, price_in_per_mtok=2.0, price_out_per_mtok=10.0).complete(MESSAGES)
    assert c.text == "hello" and c.finish_reason == "stop"
    assert (c.usage.calls, c.usage.prompt_tokens, c.usage.completion_tokens) == (1, 1000, 500)
    assert c.usage.cost_usd == pytest.approx(1000 * 2.0 / 1e6 + 500 * 10.0 / 1e6)
    assert c.usage.model == "fake/fake-small" and c.usage.retries == 0
    sent = server.chat_requests[0].body
    assert sent["model"] == "fake-small" and sent["messages"] == MESSAGES and "response_format" not in sent


def test_only_the_configured_key_is_sent_and_it_is_read_at_call_time(server, monkeypatch):
    llm = client(server)
    monkeypatch.setenv("ARCHER_TEST_KEY", "sk-rotated-key")
    server.script(reply("ok"))
    llm.complete(MESSAGES)
    headers = server.chat_requests[0].headers
    assert headers["authorization"] == "Bearer sk-rotated-key"
    assert "sk-some-other-key" not in str(headers)


def test_missing_key_is_a_config_error_naming_the_variable(server, monkeypatch):
    monkeypatch.delenv("ARCHER_TEST_KEY")
    with pytest.raises(ConfigError, match="ARCHER_TEST_KEY"):
        client(server).complete(MESSAGES)
    assert server.requests == []


def test_schema_is_sent_as_json_schema_response_format(server):
    server.script(reply('{"name": "x"}'))
    c = client(server).complete(MESSAGES, schema=SCHEMA)
    fmt = server.chat_requests[0].response_format
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA
    assert c.structured


def test_rate_limit_is_retried_after_the_time_the_server_asks(server):
    server.script(error(429, "slow down", retry_after=0.2), reply("ok"))
    c = client(server).complete(MESSAGES)
    assert c.text == "ok"
    assert len(c.retries) == 1 and c.usage.retries == 1
    assert c.retries[0].delay_s >= 0.2 and "429" in c.retries[0].reason


def test_server_error_is_retried_with_backoff(server):
    server.script(error(500, "boom"), error(503, "busy"), reply("ok"))
    c = client(server).complete(MESSAGES)
    assert c.text == "ok"
    assert [r.reason.split(":")[0] for r in c.retries] == ["HTTP 500", "HTTP 503"]
    assert len(server.chat_requests) == 3


def test_slow_answer_past_the_timeout_is_retried(server):
    server.script(slow(2.0, reply("late")), reply("ok"))
    c = client(server, timeout_s=0.3).complete(MESSAGES)
    assert c.text == "ok"
    assert c.retries[0].reason == "timeout after 0.3 s"


def test_retries_exhausted_on_timeouts_name_the_timeout(server):
    server.default = slow(2.0, reply("late"))
    with pytest.raises(ProposalError, match=r"gave up after 2 attempts; last: timeout after 0.2 s") as info:
        client(server, max_retries=1, timeout_s=0.2).complete(MESSAGES)
    assert info.value.usage.retries == 1
    assert len(server.chat_requests) == 2


def test_connection_refused_is_retried_then_reported(server):
    llm = client(server, max_retries=1)
    server.stop()
    with pytest.raises(ProposalError, match="connection error"):
        llm.complete(MESSAGES)


def test_structured_output_rejection_is_remembered(server):
    server.script(error(400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported",
                        param="response_format"), reply("plain"), reply("plain again"))
    llm = client(server)
    with pytest.raises(StructuredOutputRejected):
        llm.complete(MESSAGES, schema=SCHEMA)
    assert llm.structured_ok is False
    c = llm.complete(MESSAGES, schema=SCHEMA)
    assert not c.structured and server.chat_requests[1].response_format is None


def test_reasoning_model_parameters_are_adapted(server):
    server.script(error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                             "Use 'max_completion_tokens' instead.", param="max_tokens"),
                  error(400, "Unsupported value: 'temperature' does not support 0.7", param="temperature"),
                  reply("ok"), reply("ok"))
    llm = client(server)
    assert llm.complete(MESSAGES).text == "ok"
    last = server.chat_requests[2].body
    assert "max_tokens" not in last and last["max_completion_tokens"] == 8000 and "temperature" not in last
    llm.complete(MESSAGES)
    assert "max_tokens" not in server.chat_requests[3].body


def test_other_bad_requests_fail_at_once(server):
    server.script(error(400, "messages: too long"))
    with pytest.raises(ProposalError, match="request rejected") as info:
        client(server).complete(MESSAGES)
    assert info.value.kind == "rejected" and len(server.chat_requests) == 1


def test_authentication_failure_is_a_config_error_without_the_key(server):
    server.script(error(401, "Incorrect API key provided: sk-test-configured-key"))
    with pytest.raises(ConfigError, match="HTTP 401") as info:
        client(server).complete(MESSAGES)
    assert "sk-test-configured-key" not in str(info.value)


def test_a_body_that_is_not_json_is_an_endpoint_error(server):
    server.script(Reply(raw_body="<html>gateway</html>"))
    with pytest.raises(ProposalError, match="not a chat completion"):
        client(server).complete(MESSAGES)


def test_fake_server_lists_models_without_consuming_the_script(server):
    import openai
    server.script(reply("kept"))
    with openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0) as sdk:
        assert [m.id for m in sdk.models.list()] == ["fake-small", "fake-large"]
    assert server.remaining == 1 and server.requests[0].path == "/v1/models"
