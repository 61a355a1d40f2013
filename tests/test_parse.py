"""The tolerant reply parser: every way a model formats a proposal, and every way it fails in one line."""
import json
from pathlib import Path

import pytest

from agent.errors import ProposalError
from agent.parse import missing_chinese, parse_reply, parse_translations, reply_schema
from agent.proposal import SECTIONS
from agent.records import TASKS
from openai_server import causality_leak, proposal_json, proposal_text, search_replace_text, wrong_signature
from sandbox.static_checks import check_signature, parse

PARENT = (Path(__file__).resolve().parent.parent / "sandbox" / "naive.py").read_text()
NEW_CODE = PARENT.replace("    q = q * Dk ** -0.5\n", "    q = q * Dk ** -0.5\n    beta = beta.clamp(max=0.9)\n")
SECTION_TEXT = {"observations": "Fuzzy Recall lags", "reasoning": "Clamping beta bounds each update",
                "expected": "Memorize up a little", "code_issues": "beta can approach 1",
                "lessons": "unbounded updates failed", "builds_on": "keeps the WY form"}


def parse_error(text, **kw) -> ProposalError:
    with pytest.raises(ProposalError) as info:
        parse_reply(text, **kw)
    assert "\n" not in str(info.value)
    return info.value


def test_structured_json_reply_becomes_a_full_proposal():
    p = parse_reply(proposal_json("clamp_beta", code=NEW_CODE, predicted={"memorize": 0.4}))
    assert p.name == "clamp_beta"
    assert p.resolve_code(PARENT) == NEW_CODE
    assert p.predicted == {"memorize": 0.4}
    assert all(getattr(p, s).en and getattr(p, s).zh for s in SECTIONS)


def test_json_inside_a_fence_with_prose_around_it_is_found():
    text = "Here is my proposal.\n```json\n" + proposal_json("clamp_beta", code=NEW_CODE) + "\n```\nHope it helps!"
    assert parse_reply(text).name == "clamp_beta"


def test_json_with_trailing_commas_and_raw_newlines_in_strings_is_repaired():
    body = json.loads(proposal_json("clamp_beta", code=NEW_CODE))
    text = json.dumps(body, ensure_ascii=False, indent=1)
    text = text.replace(json.dumps(NEW_CODE), '"' + NEW_CODE.replace("\\", "\\\\").replace('"', '\\"') + '"')
    text = text.replace('"edits": []', '"edits": [],')
    assert "\n    B, H, L, Dk" in text
    assert parse_reply(text).code == NEW_CODE


def test_json_with_section_strings_and_flat_chinese_keys_is_accepted():
    data = {"name": "Clamp Beta!", "code": "```python\n" + NEW_CODE + "```",
            **{s: t for s, t in SECTION_TEXT.items()}, **{f"{s}_zh": "中文" for s in SECTIONS},
            "predicted": {"Context Recall": "99%", "memorize": 0.4, "bogus": 3}}
    p = parse_reply(json.dumps(data, ensure_ascii=False))
    assert p.name == "clamp_beta"
    assert p.code == NEW_CODE
    assert p.reasoning.zh == "中文"
    assert p.predicted == {"context_recall": 0.99, "memorize": 0.4}


def test_json_edits_are_applied_against_the_parent():
    edits = [{"search": "    q = q * Dk ** -0.5\n", "replace": "    q = q * Dk ** -0.5\n    beta = beta.clamp(max=0.9)\n"}]
    p = parse_reply(proposal_json("clamp_beta", edits=edits))
    assert p.code is None and len(p.edits) == 1
    assert p.resolve_code(PARENT) == NEW_CODE


def test_malformed_json_that_cannot_be_repaired_is_one_line_error():
    e = parse_error('{"name": "x", "code": "import torch" "observations": }')
    assert e.kind == "malformed_json"
    assert "malformed JSON" in str(e)


def test_json_cut_off_midway_is_reported_as_truncated():
    e = parse_error(proposal_json("clamp_beta", code=NEW_CODE)[:300])
    assert e.kind == "malformed_json" and "truncated" in str(e)


def test_free_text_with_fenced_file_and_bilingual_headings():
    p = parse_reply(proposal_text("clamp_beta", NEW_CODE))
    assert p.name == "clamp_beta"
    assert p.code.strip() == NEW_CODE.strip()
    assert p.observations.en.startswith("the table shows")
    assert p.observations.zh.startswith("结果表")
    assert p.predicted == {t: 0.5 for t in TASKS}
    assert missing_chinese(p) == []


def test_search_replace_blocks_become_edits():
    p = parse_reply(search_replace_text("clamp_beta", "    q = q * Dk ** -0.5",
                                        "    q = q * Dk ** -0.5\n    beta = beta.clamp(max=0.9)"))
    assert p.code is None
    assert p.resolve_code(PARENT) == NEW_CODE
    assert p.builds_on.en and "<<<<<<<" not in p.builds_on.en


def test_bare_file_under_a_code_heading_keeps_its_comments():
    p = parse_reply(proposal_text("clamp_beta", NEW_CODE, fence=False))
    assert p.code.strip() == NEW_CODE.strip()
    assert "# Split the sequence" in p.code


def test_bare_file_without_heading_is_cut_where_prose_resumes():
    text = ("name: clamp_beta\n\n## Reasoning\nClamp beta.\n\n## Expected\nBetter Memorize.\n\n"
            + NEW_CODE + "\nThat is all: this keeps recall intact.\n")
    p = parse_reply(text)
    assert p.code.strip() == NEW_CODE.strip()


def test_mixed_language_headings_and_bold_titles_are_split_by_language():
    text = ("**Name:** `clamp_beta`\n\n## Reasoning / 推理\nClamp beta to bound updates.\n\n限制 beta 以约束更新。\n\n"
            "**Expected**\nMemorize improves: Memorize 0.45, Fuzzy Recall 30%\n\n"
            "```python\n" + NEW_CODE + "```\n")
    p = parse_reply(text)
    assert p.name == "clamp_beta"
    assert p.reasoning.en == "Clamp beta to bound updates."
    assert p.reasoning.zh == "限制 beta 以约束更新。"
    assert p.predicted == {"memorize": 0.45, "fuzzy_recall": 0.30}
    assert missing_chinese(p) == ["expected"]


def test_reply_without_code_is_rejected():
    e = parse_error("name: idea_only\n## Reasoning\nA thought.\n## Expected\nGains.\n")
    assert e.kind == "no_code"


def test_refusal_in_text_or_in_the_refusal_field_is_reported():
    assert parse_error("I'm sorry, but I can't help with that request.").kind == "refused"
    assert parse_error(None, refusal="I cannot assist with this.").kind == "refused"


def test_truncated_outputs_are_reported():
    assert parse_error(proposal_text("clamp_beta", NEW_CODE), finish_reason="length").kind == "truncated"
    cut = proposal_text("clamp_beta", NEW_CODE).rsplit("```", 1)[0]
    assert parse_error(cut).kind == "truncated"


def test_missing_required_sections_are_named():
    e = parse_error("name: x_y\n## Observations\nSomething.\n```python\n" + NEW_CODE + "```\n")
    assert e.kind == "missing_sections"
    assert "reasoning" in str(e) and "expected" in str(e)


def test_empty_reply_and_missing_name_are_errors():
    assert parse_error("   ").kind == "empty"
    assert parse_error("## Reasoning\nr\n## Expected\ne\n```python\n" + NEW_CODE + "```\n").kind == "no_name"


def test_wrong_signature_parses_and_static_check_rejects_it():
    p = parse_reply(proposal_json("drop_beta", code=wrong_signature(PARENT)))
    result = check_signature(parse(p.resolve_code(PARENT)))
    assert not result.passed


def test_causality_leak_parses_and_passes_the_static_signature_check():
    p = parse_reply(proposal_text("future_mean", causality_leak(PARENT)))
    assert "v.mean(dim=2" in p.code
    assert check_signature(parse(p.code)).passed


def test_translations_come_from_json_or_headings():
    assert parse_translations('{"reasoning": "推理"}', ["reasoning"]) == {"reasoning": "推理"}
    assert parse_translations("### lessons\n经验\n", ["lessons"]) == {"lessons": "经验"}


def test_reply_schema_is_strict_and_names_every_task():
    schema = reply_schema()

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for v in node.values():
                yield from objects(v)
        elif isinstance(node, list):
            for v in node:
                yield from objects(v)

    for obj in objects(schema):
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])
    assert "mutations" not in schema["properties"]
    assert sorted(schema["properties"]["predicted"]["required"]) == sorted(TASKS)


def test_numbered_bilingual_headings_with_prose_around_the_code():
    text = ("Here's my proposal.\n\n**Name:** `tanh_on_delta_error`\n\n"
            "### 1. Key Observations / 关键观察\nRecall is perfect.\n\n回忆任务接近完美。\n\n"
            "### 3. Technical Reasoning / 技术推理\nApply tanh to the delta.\n对误差应用 tanh。\n\n"
            "### 4. Expected Improvements / 预期改进\n- Compress: ~0.50\n- Memorize: 35%\n\n- 压缩：约 0.50\n\n"
            "```python\n" + NEW_CODE + "```\n\nLet me know if you'd like a variant!\n")
    p = parse_reply(text)
    assert p.name == "tanh_on_delta_error"
    assert (p.reasoning.en, p.reasoning.zh) == ("Apply tanh to the delta.", "对误差应用 tanh。")
    assert p.predicted == {"compress": 0.5, "memorize": 0.35}
    assert "def delta_rule_chunkwise" not in p.expected.en and p.code == NEW_CODE


def test_plain_title_lines_of_the_earlier_pipeline_are_sections():
    text = ("Key Observations from Experiment Results\n• Recall is near perfect.\n• 回忆任务近乎完美。\n\n"
            "Technical Reasoning for Proposed Change\nWe insert tanh on the error.\n\n"
            "Expected Improvements from the Modification\n• Compress improves.\n\n"
            "name: tanh_on_error\n\n```python\n" + NEW_CODE + "```\n")
    p = parse_reply(text)
    assert p.observations.en == "• Recall is near perfect." and p.observations.zh == "• 回忆任务近乎完美。"
    assert p.reasoning.en == "We insert tanh on the error." and p.expected.en == "• Compress improves."
    assert missing_chinese(p) == ["reasoning", "expected"]
