"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: scripted replies, recorded requests.

Speaks POST /v1/chat/completions and GET /v1/models (stdlib http.server in a thread, port 0).
Used by tests/test_llm.py, tests/test_llm_proposer.py and the loop's tests; it is itself exercised
by every one of them.

How to script it:

    from openai_server import FakeOpenAI, reply, error, slow, proposal_json   # tests/ is on sys.path under pytest

    with FakeOpenAI() as server:                      # starts on a free port; stops on exit
        server.script(
            error(429, "slow down", retry_after=0),   # one HTTP error (any status; Retry-After header)
            slow(2.0, reply("...")),                  # answers only after 2 s (for client timeouts)
            reply(proposal_json("my_idea", code=CODE)),  # a normal completion (content, finish_reason,
        )                                             #   usage tokens; refusal= for a refusal field)
        server.default = reply(...)                   # served once the script is used up (None: 404)
        endpoint = Endpoint(base_url=server.base_url, api_key_env="FAKE_KEY", ...)
        ...
        server.requests                               # every request: .path, .headers, .body (JSON)
        server.requests[0].messages / .response_format / .authorization

A script item may also be a callable `f(request) -> Reply` (e.g. answer with a proposal built
from the parent code it finds in the prompt). Replies are served first-in first-out, one per
chat completion request; GET /v1/models is answered without consuming the script.
Ready-made bodies: `proposal_json` (a complete JSON proposal), `proposal_text` (free text with
markdown sections and a fenced file), `search_replace_text`, and candidate code builders for the
loop's rejection paths: `wrong_signature(parent_code)`, `causality_leak(parent_code)`.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Union

TASK_KEYS = ("compress", "context_recall", "fuzzy_recall", "memorize", "noisy_recall", "selective_copy")


@dataclass
class Reply:
    """One scripted answer: a completion (status 200) or an HTTP error."""
    content: str | None = ""
    finish_reason: str = "stop"
    prompt_tokens: int | None = None        # None: estimated from the request (chars / 4)
    completion_tokens: int | None = None    # None: estimated from the content (chars / 4)
    refusal: str | None = None
    status: int = 200
    error_message: str = ""
    error_param: str | None = None
    error_type: str = "invalid_request_error"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0                    # wait this long before answering
    raw_body: str | None = None             # send this body verbatim (e.g. not JSON at all)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]                 # lower-cased names
    body: dict

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])

    @property
    def response_format(self) -> dict | None:
        return self.body.get("response_format")

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")

    def text(self) -> str:
        """Every message's content joined: what the model was shown."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


ScriptItem = Union[Reply, Callable[[RecordedRequest], Reply]]


def reply(content: str | None, finish_reason: str = "stop", *, prompt_tokens: int | None = None,
          completion_tokens: int | None = None, refusal: str | None = None) -> Reply:
    return Reply(content=content, finish_reason=finish_reason, prompt_tokens=prompt_tokens,
                 completion_tokens=completion_tokens, refusal=refusal)


def error(status: int, message: str = "", *, retry_after: float | None = None, param: str | None = None,
          type: str = "invalid_request_error") -> Reply:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Reply(status=status, error_message=message or f"HTTP {status}", error_param=param,
                 error_type=type, headers=headers)


def slow(delay_s: float, then: Reply) -> Reply:
    then.delay_s = delay_s
    return then


class FakeOpenAI:
    """The server. Thread-safe: handlers take the next script item under a lock."""

    def __init__(self, models: tuple[str, ...] = ("fake-small", "fake-large")):
        self.models = models
        self.requests: list[RecordedRequest] = []
        self.default: ScriptItem | None = None
        self._script: list[ScriptItem] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def script(self, *items: ScriptItem) -> "FakeOpenAI":
        with self._lock:
            self._script.extend(items)
        return self

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAI":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next(self, request: RecordedRequest) -> Reply | None:
        with self._lock:
            self.requests.append(request)
            item = self._script.pop(0) if self._script else self.default
        if item is None:
            return None
        return item(request) if callable(item) else item

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def _handler_for(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def _record(self) -> RecordedRequest:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                body = {"_unparsed": raw.decode("utf-8", "replace")}
            headers = {k.lower(): v for k, v in self.headers.items()}
            return RecordedRequest(self.command, self.path, headers, body)

        def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
            data = body.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self):
            request = self._record()
            with server._lock:
                server.requests.append(request)
            if self.path.rstrip("/").endswith("/models"):
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in server.models]
                self._send(200, json.dumps({"object": "list", "data": data}))
            else:
                self._send(404, _error_body("not found", "invalid_request_error", None))

        def do_POST(self):
            request = self._record()
            if not self.path.rstrip("/").endswith("/chat/completions"):
                with server._lock:
                    server.requests.append(request)
                self._send(404, _error_body(f"no route {self.path}", "invalid_request_error", None))
                return
            r = server._next(request)
            if r is None:
                self._send(404, _error_body("fake server: no scripted reply left", "invalid_request_error", None))
                return
            if r.delay_s:
                server._wait(r.delay_s)
            if r.raw_body is not None:
                self._send(r.status, r.raw_body, r.headers)
            elif r.status != 200:
                self._send(r.status, _error_body(r.error_message, r.error_type, r.error_param), r.headers)
            else:
                self._send(200, json.dumps(_completion(request, r)), r.headers)

    return Handler


def _error_body(message: str, type_: str, param: str | None) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": None}})


def _completion(request: RecordedRequest, r: Reply) -> dict:
    prompt_tokens = r.prompt_tokens if r.prompt_tokens is not None else max(1, len(request.text()) // 4)
    completion_tokens = (r.completion_tokens if r.completion_tokens is not None
                         else max(1, len(r.content or "") // 4))
    return {
        "id": f"chatcmpl-fake-{len(request.body.get('messages', []))}-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.body.get("model", "fake"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": r.content, "refusal": r.refusal},
            "finish_reason": r.finish_reason,
            "logprobs": None,
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _sections(name: str, zh: bool = True) -> dict:
    topics = {
        "observations": "the table shows Fuzzy Recall and Memorize lag behind",
        "code_issues": "the state is overwritten without any normalisation",
        "reasoning": "bounding the error term keeps the state update contractive",
        "expected": "recall tasks hold, Memorize improves slightly",
        "lessons": "unbounded state updates collapsed recall in earlier candidates",
        "builds_on": f"{name} keeps the parent's chunkwise structure",
    }
    zh_topics = {
        "observations": "结果表显示模糊回忆和记忆任务落后",
        "code_issues": "状态在没有归一化的情况下被覆盖",
        "reasoning": "限制误差项使状态更新保持收缩",
        "expected": "回忆任务保持不变，记忆任务略有提升",
        "lessons": "以前无界的状态更新使回忆任务崩溃",
        "builds_on": "保留父代的分块结构",
    }
    return {k: {"en": v, "zh": zh_topics[k] if zh else ""} for k, v in topics.items()}


def proposal_json(name: str, *, code: str | None = None, edits: list[dict] | None = None,
                  predicted: dict[str, float] | None = None, zh: bool = True) -> str:
    """A complete JSON proposal as a structured-output endpoint would send it."""
    body: dict = {"name": name, **_sections(name, zh),
                  "predicted": predicted if predicted is not None else {t: 0.5 for t in TASK_KEYS},
                  "code": code, "edits": edits or []}
    return json.dumps(body, ensure_ascii=False)


def proposal_text(name: str, code: str, *, fence: bool = True) -> str:
    """A free-text proposal: `name:` line, markdown sections in both languages, the file (fenced or bare)."""
    s = _sections(name)
    parts = [f"name: {name}", ""]
    titles = {"observations": ("Observations", "观察"), "code_issues": ("Code issues", "代码问题"),
              "reasoning": ("Reasoning", "推理"), "expected": ("Expected", "预期"),
              "lessons": ("Lessons", "经验"), "builds_on": ("Builds on", "继承")}
    for key, (en, zh) in titles.items():
        parts += [f"## {en}", s[key]["en"], "", f"## {zh}", s[key]["zh"], ""]
    parts += ["## Predicted", ", ".join(f"{t}: 0.5" for t in TASK_KEYS), ""]
    parts += ["## Code", f"```python\n{code.rstrip()}\n```" if fence else code.rstrip(), ""]
    return "\n".join(parts)


def search_replace_text(name: str, search: str, replace: str) -> str:
    """A free-text proposal whose code is one aider-style SEARCH/REPLACE block."""
    head = proposal_text(name, "x = 1").rsplit("## Code", 1)[0]
    return head + f"## Code\nnaive.py\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def _wrap(parent_code: str, wrapper: str) -> str:
    inner = parent_code.replace("def delta_rule_chunkwise(", "def _parent_delta_rule_chunkwise(", 1)
    return "import torch\n" + inner.rstrip() + "\n\n\n" + wrapper


def wrong_signature(parent_code: str) -> str:
    """The parent's rule behind a function that drops `beta` from the signature (static check must reject)."""
    return _wrap(parent_code, (
        "def delta_rule_chunkwise(q, k, v, chunk_size=32):\n"
        "    beta = torch.ones(q.shape[:-1], dtype=q.dtype, device=q.device)\n"
        "    return _parent_delta_rule_chunkwise(q, k, v, beta, chunk_size)\n"))


def causality_leak(parent_code: str) -> str:
    """The parent's rule plus the mean of v over the whole sequence: future tokens leak into the past."""
    return _wrap(parent_code, (
        "def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):\n"
        "    o, S = _parent_delta_rule_chunkwise(q, k, v, beta, chunk_size)\n"
        "    return o + v.mean(dim=2, keepdim=True), S\n"))
