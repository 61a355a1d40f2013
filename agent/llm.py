"""The one LLM seam: a chat-completions client for any OpenAI-compatible endpoint, over the openai SDK.

The retry policy is ours and recorded (the SDK's own retries are off): exponential backoff with
jitter on 429, 5xx, timeouts and connection errors, honouring Retry-After. Each call returns the
text, its token usage and cost. The API key is read from the environment at call time and never
logged or stored. Tested over real HTTP against tests/openai_server.py by tests/test_llm.py.
"""
from __future__ import annotations

import email.utils
import os
import random
import time
from dataclasses import dataclass, field

import openai

from agent.config import Endpoint
from agent.errors import ConfigError, ProposalError
from agent.records import Usage

RETRY_STATUSES = (408, 409, 429)            # and every 5xx


class StructuredOutputRejected(ProposalError):
    """The endpoint refused `response_format` (HTTP 400 naming it): ask again in free text."""


@dataclass
class Retry:
    """One failed attempt that was retried: why, and how long we waited before the next."""
    reason: str
    delay_s: float


@dataclass
class Completion:
    text: str
    finish_reason: str
    refusal: str | None
    structured: bool                        # whether a JSON schema was requested
    usage: Usage
    retries: list[Retry] = field(default_factory=list)


def cost_usd(endpoint: Endpoint, prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * endpoint.price_in_per_mtok + completion_tokens * endpoint.price_out_per_mtok) / 1e6


class LLMClient:
    """Chat completions against one endpoint. Learns what the endpoint rejects (response_format,
    max_tokens, temperature) and stops sending it, for the life of the client."""

    def __init__(self, endpoint: Endpoint, *, max_retries: int = 4, base_delay_s: float = 1.0,
                 max_delay_s: float = 60.0, seed: int = 0) -> None:
        self.endpoint = endpoint
        self.max_retries = max_retries
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.structured_ok = endpoint.structured_output
        self._token_param = "max_tokens"
        self._send_temperature = True
        self._rng = random.Random(seed)

    @property
    def label(self) -> str:
        """What Usage.model records: the endpoint's name and its model."""
        return f"{self.endpoint.name}/{self.endpoint.model}"

    def complete(self, messages: list[dict], schema: dict | None = None) -> Completion:
        """One completion, retried on transient failures; ProposalError when it cannot be had."""
        with openai.OpenAI(api_key=self._api_key(), base_url=self.endpoint.base_url,
                           timeout=self.endpoint.timeout_s, max_retries=0) as client:
            return self._complete(client, messages, schema)

    def _complete(self, client: openai.OpenAI, messages: list[dict], schema: dict | None) -> Completion:
        structured = schema is not None and self.structured_ok
        retries: list[Retry] = []
        started = time.monotonic()
        adapted = 0
        while True:
            try:
                request = self._request(messages, schema if structured else None)
                response = client.chat.completions.create(**request)
                break
            except openai.BadRequestError as e:
                message = self._redact(_message(e))
                if structured and _names(e, "response_format", "json_schema"):
                    self.structured_ok = False
                    raise StructuredOutputRejected(f"{self.endpoint.name}: structured output rejected: {message}",
                                                   kind="structured_output") from None
                if adapted < 2 and self._adapt(e):
                    adapted += 1
                    continue
                raise ProposalError(f"{self.endpoint.name}: request rejected (HTTP 400): {message}",
                                    kind="rejected") from None
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
                ep = self.endpoint
                raise ConfigError(f"endpoint {ep.name!r} ({ep.base_url}, model {ep.model}): "
                                  f"HTTP {e.status_code}: {self._redact(_message(e))}") from None
            except (openai.APIStatusError, openai.APIConnectionError) as e:
                reason = self._describe(e)
                if not _retryable(e):
                    raise ProposalError(f"{self.endpoint.name}: {reason}", kind="endpoint",
                                        usage=self._spent(retries, started)) from None
                if len(retries) >= self.max_retries:
                    raise ProposalError(f"{self.endpoint.name}: gave up after {len(retries) + 1} attempts; "
                                        f"last: {reason}", kind="endpoint",
                                        usage=self._spent(retries, started)) from None
                delay = self._delay(len(retries), _retry_after(e))
                retries.append(Retry(reason, delay))
                time.sleep(delay)
            except (ValueError, openai.APIResponseValidationError) as e:
                raise ProposalError(f"{self.endpoint.name}: the response is not a chat completion: "
                                    f"{self._redact(str(e))[:200]}", kind="endpoint") from None
        return self._completion(response, structured, retries, time.monotonic() - started)

    def _spent(self, retries: list[Retry], started: float) -> Usage:
        return Usage(model=self.label, seconds=round(time.monotonic() - started, 3), retries=len(retries))

    def _api_key(self) -> str:
        if not self.endpoint.api_key_env:
            return "unused"
        key = os.environ.get(self.endpoint.api_key_env)
        if not key:
            raise ConfigError(f"endpoint {self.endpoint.name!r}: environment variable "
                              f"{self.endpoint.api_key_env} (its API key) is not set")
        return key

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.endpoint.api_key_env or "", "")
        return text.replace(key, "***") if len(key) >= 4 else text

    def _request(self, messages: list[dict], schema: dict | None) -> dict:
        request: dict = {"model": self.endpoint.model, "messages": messages,
                         self._token_param: self.endpoint.max_tokens}
        if self._send_temperature:
            request["temperature"] = self.endpoint.temperature
        if schema is not None:
            request["response_format"] = {"type": "json_schema",
                                          "json_schema": {"name": "proposal", "strict": True, "schema": schema}}
        return request

    def _adapt(self, e: openai.BadRequestError) -> bool:
        """Reasoning models reject max_tokens and temperature: rename or drop what the 400 names."""
        if self._token_param == "max_tokens" and _names(e, "max_tokens"):
            self._token_param = "max_completion_tokens"
            return True
        if self._send_temperature and _names(e, "temperature"):
            self._send_temperature = False
            return True
        return False

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** attempt) * (0.5 + self._rng.random())
        return max(backoff, retry_after) if retry_after is not None else backoff

    def _describe(self, e: openai.APIError) -> str:
        if isinstance(e, openai.APITimeoutError):
            return f"timeout after {self.endpoint.timeout_s:g} s"
        if isinstance(e, openai.APIConnectionError):
            return f"connection error ({self._redact(str(e.__cause__ or e))[:120]})"
        assert isinstance(e, openai.APIStatusError)
        return f"HTTP {e.status_code}: {self._redact(_message(e))[:200]}"

    def _completion(self, response, structured: bool, retries: list[Retry], seconds: float) -> Completion:
        if not response.choices:
            raise ProposalError(f"{self.endpoint.name}: the response has no choices", kind="endpoint")
        choice = response.choices[0]
        usage = response.usage
        prompt = usage.prompt_tokens if usage else 0
        completion = usage.completion_tokens if usage else 0
        return Completion(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "",
            refusal=getattr(choice.message, "refusal", None),
            structured=structured,
            usage=Usage(calls=1, prompt_tokens=prompt, completion_tokens=completion,
                        cost_usd=cost_usd(self.endpoint, prompt, completion), model=self.label,
                        seconds=round(seconds, 3), retries=len(retries)),
            retries=retries,
        )


def _message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return e.message


def _names(e: openai.APIStatusError, *words: str) -> bool:
    text = f"{getattr(e, 'param', '') or ''} {_message(e)}".lower()
    return any(w in text for w in words)


def _retryable(e: openai.APIError) -> bool:
    if isinstance(e, openai.APIConnectionError):
        return True
    return isinstance(e, openai.APIStatusError) and (e.status_code in RETRY_STATUSES or e.status_code >= 500)


def _retry_after(e: openai.APIError) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, Retry-After seconds or HTTP date)."""
    response = getattr(e, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
