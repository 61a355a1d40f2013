"""Turns an LLM's reply into a Proposal, tolerating the ways real models format their answers.

Accepts a JSON object (bare, inside a ```json fence, with prose around it, with trailing commas
or raw newlines in strings), or free text: a `name:` line, markdown sections in English and
Chinese, and the code as a fenced full file, aider-style SEARCH/REPLACE blocks, or a bare file.
Anything else is one ProposalError line. `reply_schema` is the JSON schema sent as structured
output. Tested by tests/test_parse.py.
"""
from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from agent.errors import ProposalError
from agent.proposal import SECTIONS, Edit, Proposal
from agent.records import TASKS, TASK_TITLES
from sandbox.static_checks import ast_parse

REQUIRED_EN = ("reasoning", "expected")    # a report without these says nothing; the rest may be empty

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_FENCE_LINE = re.compile(r"^[ \t]*```")
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
_SEARCH_REPLACE = re.compile(
    r"^<{5,9}[ \t]*SEARCH[^\n]*\n(.*?)^={5,9}[ \t]*\n(.*?)^>{5,9}[ \t]*REPLACE[^\n]*$", re.S | re.M)
_HEADING = re.compile(r"^(?:#{1,6}[ \t]+(.+?)[ \t#]*|\*\*([^*\n]{2,60})\*\*[ \t]*[:：]?)[ \t]*$")
_NAME_LINE = re.compile(r"^[ \t>*_-]*\**`?name`?\**[ \t]*[:：]\**[ \t]*`?\**([A-Za-z][\w-]*)", re.I | re.M)
_CODE_START = re.compile(r"^(?:\"\"\"|import [\w.]|from [\w.]+ import |def \w|class \w|@\w)")
_REFUSAL = re.compile(
    r"\b(?:I\s+(?:can(?:no|')t|cannot|won't|will not|am unable to|'m unable to|must decline to)|"
    r"I'm sorry, but I|I am sorry, but I)\b[^.\n]{0,80}?\b(?:help|assist|comply|provide|do that|fulfil)", re.I)

# heading keywords per section, checked in this order (first match wins); lower-case
_TITLE_KEYS = (
    ("predicted", ("predict", "预测")),
    ("code_issues", ("code issue", "issues", "problem", "代码问题", "问题")),
    ("observations", ("observ", "观察", "发现")),
    ("reasoning", ("reason", "rational", "technical", "math", "推理", "技术", "理由")),
    ("expected", ("expect", "预期", "期望")),
    ("lessons", ("lesson", "经验", "教训")),
    ("builds_on", ("build", "history", "prior work", "继承", "基于", "历史", "区别")),
    ("name", ("name", "名称")),
    ("code", ("code", "naive.py", "implementation", "代码", "实现")),
)


def parse_reply(text: str | None, *, finish_reason: str | None = "stop", refusal: str | None = None) -> Proposal:
    """The Proposal in one reply, or ProposalError saying in one line why there is none."""
    if finish_reason == "length":
        raise ProposalError("reply truncated: the model hit max_tokens (finish_reason 'length')", kind="truncated")
    if refusal:
        raise ProposalError(f"model refused: {_first_line(refusal)}", kind="refused")
    if finish_reason == "content_filter":
        raise ProposalError("reply withheld by the endpoint's content filter", kind="refused")
    text = (text or "").strip()
    if not text:
        raise ProposalError("empty reply", kind="empty")
    data = _json_object(text)
    if data is not None:
        return _from_json(data, text)
    return _from_text(text)


def missing_chinese(proposal: Proposal) -> list[str]:
    """Sections that have English text but no Chinese: asked for in one follow-up request."""
    return [s for s in SECTIONS if getattr(proposal, s).en.strip() and not getattr(proposal, s).zh.strip()]


def parse_translations(text: str, keys: list[str]) -> dict[str, str]:
    """The Chinese texts of a translation reply: a JSON object by section key, or `### key` headings."""
    text = (text or "").strip()
    for start in [m.start() for m in re.finditer(r"\{", text)][:5]:
        try:
            obj, _ = json.JSONDecoder(strict=False).raw_decode(text[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return {k: str(obj[k]).strip() for k in keys if isinstance(obj.get(k), str)}
    out: dict[str, str] = {}
    for m in re.finditer(r"^#{1,6}[ \t]*(\w+)[ \t]*\n(.*?)(?=^#{1,6}[ \t]|\Z)", text, re.S | re.M):
        if m.group(1) in keys and m.group(2).strip():
            out[m.group(1)] = m.group(2).strip()
    return out


def reply_schema() -> dict:
    """The structured-output schema: Proposal's own schema made strict (every field required,
    no extra keys, predicted as one number per task), without the mutate-only field."""
    schema = Proposal.model_json_schema()
    schema["properties"].pop("mutations", None)
    schema["properties"]["predicted"] = {
        "type": "object", "additionalProperties": False, "required": list(TASKS),
        "properties": {t: {"type": "number", "description": f"expected {TASK_TITLES[t]} score in [0, 1]"}
                       for t in TASKS}}
    return _strict(schema)


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items() if k not in ("default", "title")}
        if out.get("type") == "object" and "properties" in out:
            out["additionalProperties"] = False
            out["required"] = list(out["properties"])
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def _first_line(s: str, limit: int = 160) -> str:
    line = next((ln.strip() for ln in s.strip().splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _json_object(text: str) -> dict | None:
    """The reply's JSON object, or None when the reply is not JSON at all; malformed JSON raises."""
    fenced = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("json", "jsonc", "json5")]
    looks_json = text.startswith("{") or bool(fenced)
    candidates = fenced + ([text[text.index("{"):]] if "{" in text else [])
    first_error = ""
    for cand in candidates:
        for attempt in (cand, re.sub(r",(\s*[}\]])", r"\1", cand)):
            try:
                obj, _ = json.JSONDecoder(strict=False).raw_decode(attempt.strip())
            except json.JSONDecodeError as e:
                first_error = first_error or f"{e.msg} at line {e.lineno} column {e.colno}"
                continue
            if isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
                obj = next(iter(obj.values()))
            if isinstance(obj, dict) and ({"name", "code", "edits"} & obj.keys()):
                return obj
    if looks_json:
        hint = "" if text.rstrip().endswith(("}", "```")) else " (the JSON ends early: truncated?)"
        raise ProposalError(f"malformed JSON in reply: {first_error or 'no proposal object'}{hint}",
                            kind="malformed_json")
    return None


def _task_key(label: str) -> str | None:
    norm = re.sub(r"[\s_-]+", "_", label.strip().lower())
    for t in TASKS:
        if norm in (t, TASK_TITLES[t].lower().replace(" ", "_")):
            return t
    return None


def _score(value: Any) -> float | None:
    try:
        x = float(str(value).strip().rstrip("%"))
    except ValueError:
        return None
    if (isinstance(value, str) and value.strip().endswith("%")) or 1.0 < x <= 100.0:
        x /= 100.0
    return x if 0.0 <= x <= 1.0 else None


def _predicted(raw: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(raw, dict):
        for k, v in raw.items():
            key, score = _task_key(str(k)), _score(v)
            if key and score is not None:
                out[key] = score
    return out


def _strip_fence(code: str) -> str:
    m = _FENCE.search(code)
    return m.group(2) if m and code.lstrip().startswith("```") else code


def _edits_in(text: str) -> list[Edit]:
    opens = len(re.findall(r"^<{5,9}[ \t]*SEARCH", text, re.M))
    closes = len(re.findall(r"^>{5,9}[ \t]*REPLACE", text, re.M))
    if opens != closes:
        raise ProposalError(f"unbalanced SEARCH/REPLACE blocks ({opens} SEARCH, {closes} REPLACE): truncated?",
                            kind="truncated")
    return [Edit(search=s.removesuffix("\n"), replace=r.removesuffix("\n"))
            for s, r in _SEARCH_REPLACE.findall(text)]


def _bilingual(data: dict, key: str) -> dict:
    v = data.get(key)
    if isinstance(v, dict):
        en = v.get("en") or v.get("english") or v.get("English") or ""
        zh = v.get("zh") or v.get("cn") or v.get("chinese") or v.get("Chinese") or v.get("中文") or ""
    else:
        en = v if isinstance(v, str) else data.get(f"{key}_en", "")
        zh = data.get(f"{key}_zh", "")
    return {"en": str(en).strip(), "zh": str(zh).strip()}


def _build(name: Any, sections: dict[str, dict], predicted: dict[str, float], code: str | None,
           edits: list[Edit]) -> Proposal:
    if not name:
        raise ProposalError("reply has no name (expected a snake_case `name`)", kind="no_name")
    if not (code and code.strip()) and not edits:
        raise ProposalError("reply has no code: neither a full naive.py nor SEARCH/REPLACE edits", kind="no_code")
    missing = [s for s in REQUIRED_EN if not sections[s]["en"]]
    if missing:
        raise ProposalError(f"reply lacks required sections: {', '.join(missing)} (English)", kind="missing_sections")
    try:
        return Proposal(name=str(name), predicted=predicted, code=code if code and code.strip() else None,
                        edits=edits, **sections)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ProposalError(f"reply does not fit the proposal format: {where}: {first['msg']}", kind="format") from None


def _from_json(data: dict, text: str) -> Proposal:
    sections = {s: _bilingual(data, s) for s in SECTIONS}
    code = data.get("code")
    code = _strip_fence(code) if isinstance(code, str) else None
    edits: list[Edit] = []
    raw_edits = data.get("edits") or []
    if isinstance(raw_edits, str):
        edits = _edits_in(raw_edits)
    elif isinstance(raw_edits, list):
        for e in raw_edits:
            if isinstance(e, dict) and "search" in e and "replace" in e:
                edits.append(Edit(search=str(e["search"]), replace=str(e["replace"])))
    if code and _SEARCH_REPLACE.search(code):
        edits, code = edits + _edits_in(code), None
    if not (code or edits) and _REFUSAL.search(text):
        raise ProposalError(f"model refused: {_first_line(text)}", kind="refused")
    return _build(data.get("name"), sections, _predicted(data.get("predicted")), code, edits)


def _classify(title: str) -> tuple[str | None, str | None]:
    """(section key, language) of a heading title; language None when the title is bilingual."""
    t = re.sub(r"^[\d.)\s]+", "", title).strip().strip(":：").lower()
    key = next((k for k, words in _TITLE_KEYS if any(w in t for w in words)), None)
    has_cjk, has_latin = bool(_CJK.search(t)), bool(re.search(r"[a-z]{3,}", t.replace("chinese", "")
                                                                             .replace("english", "")))
    if "chinese" in t or "中文" in t or (has_cjk and not has_latin):
        return key, "zh"
    if "english" in t or "英文" in t:
        return key, "en"
    return key, None


def _plain_title(line: str) -> str | None:
    """A short line on its own that names a section ("Lessons from Historical Attempts"): a title."""
    t = line.strip()
    if not t or len(t) > 60 or len(t.split()) > 8 or t[-1] in ".。;；,，" or re.match(r"[-•*+>\d]", t):
        return None
    key, _ = _classify(t)
    return t if key in SECTIONS or key == "predicted" else None


def _split_languages(body: str) -> dict[str, str]:
    """Lines in Chinese (a sixth or more of their characters) apart from the rest; blank lines stay put."""
    out: dict[str, list[str]] = {"en": [], "zh": []}
    current = "en"
    for line in body.splitlines():
        if line.strip():
            cjk = len(_CJK.findall(line))
            current = "zh" if cjk and cjk * 6 >= len(line.replace(" ", "")) else "en"
        out[current].append(line)
    return {lang: re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() for lang, lines in out.items()}


def _code_from_text(text: str, bare_start: int | None) -> tuple[str | None, list[Edit]]:
    edits = _edits_in(text)
    if edits:
        return None, edits
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)
              if lang.lower() in ("", "python", "py", "python3")]
    with_fn = [b for _, b in blocks if "def delta_rule_chunkwise" in b]
    if with_fn:
        return with_fn[-1], []
    code_like = [b for _, b in blocks if re.search(r"^\s*(def |import |from )", b, re.M)]
    if code_like:
        return max(code_like, key=len), []
    if bare_start is not None:
        return _parsable_prefix(text[bare_start:]), []
    return None, []


def _parsable_prefix(code: str) -> str:
    """A bare file followed by prose: drop trailing lines until the rest parses (or give it all back)."""
    lines = code.rstrip().splitlines()
    for end in range(len(lines), max(len(lines) - 40, 0), -1):
        try:
            ast_parse("\n".join(lines[:end]))
            return "\n".join(lines[:end]) + "\n"
        except SyntaxError:
            continue
    return code


def _drop_code_blocks(body: str) -> str:
    """Section text without the candidate file or edit blocks that follow it in the reply."""
    return _FENCE.sub(lambda m: "" if "def delta_rule_chunkwise" in m.group(2) or "<<<<<<<" in m.group(2)
                      else m.group(0), body)


def _from_text(text: str) -> Proposal:
    if sum(1 for ln in text.splitlines() if _FENCE_LINE.match(ln)) % 2:
        raise ProposalError("reply ends inside an open ``` fence: truncated?", kind="truncated")
    fence_spans = [m.span() for m in _FENCE.finditer(text)]
    inside = lambda pos: any(a <= pos < b for a, b in fence_spans)  # noqa: E731
    lines, pos, offsets = text.splitlines(keepends=True), 0, []
    for ln in lines:
        offsets.append(pos)
        pos += len(ln)
    sections = {s: {"en": "", "zh": ""} for s in SECTIONS}
    name_match = _NAME_LINE.search(text)
    name = name_match.group(1) if name_match else None
    predicted_text, bare_start = "", None
    key, lang, body = None, None, []
    prev_blank = True

    def close() -> None:
        nonlocal predicted_text, name
        content = _drop_code_blocks("".join(body)).strip()
        if key in SECTIONS and content:
            parts = {lang: content} if lang else _split_languages(content)
            for lg, txt in parts.items():
                if txt:
                    sections[key][lg] = (sections[key][lg] + "\n\n" + txt).strip()
        elif key == "predicted":
            predicted_text += content + "\n"
        elif key == "name" and not name and content:
            name = re.sub(r"[`*]", "", content.split()[0])

    for ln, off in zip(lines, offsets):
        if inside(off):
            body.append(ln)
            continue
        if _CODE_START.match(ln):
            bare_start = off
            break
        if ln.startswith("<<<<<<<"):
            break
        if re.fullmatch(r"[ \t`]*[\w/.-]+\.py[ \t`:]*\n?", ln):
            continue
        m = _HEADING.match(ln.rstrip("\n"))
        plain = not m and prev_blank and _plain_title(ln)
        prev_blank = not ln.strip()
        if m or plain:
            title = plain or m.group(1) or m.group(2)
            new_key, new_lang = _classify(title)
            if new_key is not None or ln.startswith("#"):
                close()
                key, lang, body = new_key, new_lang, []
                if key == "code" and not _SEARCH_REPLACE.search(text, off) \
                        and not any(a > off for a, _ in fence_spans):
                    start = off + len(ln)
                    skip = re.match(r"(?:[ \t]*\n)*(?:[ \t`]*[\w/.-]+\.py[ \t`:]*\n)?", text[start:])
                    bare_start, key = start + skip.end(), None
                    break
                continue
        if _NAME_LINE.match(ln):
            continue
        body.append(ln)
    close()
    code, edits = _code_from_text(text, bare_start)
    if code is None and not edits and _REFUSAL.search(text[:600]):
        raise ProposalError(f"model refused: {_first_line(text)}", kind="refused")
    predicted = _predicted(dict(_task_scores(predicted_text or sections["expected"]["en"])))
    return _build(name, sections, predicted, code, edits)


def _task_scores(text: str) -> list[tuple[str, str]]:
    labels = "|".join(sorted({*TASKS, *(t.lower() for t in TASK_TITLES.values())}, key=len, reverse=True))
    labels = labels.replace("_", r"[\s_-]*").replace(" ", r"[\s_-]*")
    pattern = re.compile(rf"\b({labels})\b[\s*:=≈~]*([0-9]*\.?[0-9]+%?)", re.I)
    return [(label, value) for label, value in pattern.findall(text)]
