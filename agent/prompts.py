"""The one place templates are rendered: a jinja2 Environment over `prompts/`, StrictUndefined.

Everyone who renders prose (LLM prompts, insight reports, the mutate proposer's rationale) calls
`render("name.j2", **context)`; a missing variable raises instead of rendering blank text.
Tested by tests/test_llm_proposer.py (every prompt renders; a missing variable is an error).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jinja2

from agent.errors import ArcherError

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


def _fmt(value: object, spec: str = ".3f") -> str:
    """Format a number (or "-" for None) inside templates: {{ x | fmt(".2f") }}."""
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PROMPTS_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["fmt"] = _fmt
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False)
    return env


def render(template_name: str, **context: object) -> str:
    """Render prompts/<template_name> with `context`; an unknown template or variable is an ArcherError."""
    try:
        return environment().get_template(template_name).render(**context)
    except jinja2.TemplateNotFound:
        raise ArcherError(f"template {template_name!r} not found in {PROMPTS_DIR}") from None
    except jinja2.UndefinedError as e:
        raise ArcherError(f"template {template_name!r}: {e.message}") from None
    except jinja2.TemplateSyntaxError as e:
        raise ArcherError(f"template {e.name or template_name!r} line {e.lineno}: {e.message}") from None
