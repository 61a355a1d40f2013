"""Static checks: the baseline passes, each forbidden construct fails with its reason code and a
message naming the line, and fingerprints see through renames, comments and docstrings."""
from pathlib import Path

import pytest

from sandbox.static_checks import (
    CheckResult, check_duplicate, check_signature, check_static, first_failure, fingerprint, parse,
)

BASELINE = (Path(__file__).resolve().parent.parent / "sandbox" / "naive.py").read_text()

HEADER = "import torch\nimport math\n\n"
BODY = "    return v, k.transpose(-1, -2) @ v\n"


def candidate(body: str = BODY, prelude: str = "", signature: str = "q, k, v, beta, chunk_size=32") -> str:
    return f"{HEADER}{prelude}\ndef delta_rule_chunkwise({signature}):\n{body}"


def failed(code: str, earlier=()) -> CheckResult:
    result = first_failure(check_static(code, earlier))
    assert result is not None, "expected a failure"
    return result


def test_baseline_passes_every_check():
    results = check_static(BASELINE)
    assert [r.name for r in results] == ["size", "syntax", "tree_size", "imports", "names", "mutation",
                                         "signature", "duplicate"]
    assert all(r.passed for r in results)


def test_findings_match_the_result_contract():
    finding = check_static("def broken(:\n")[-1].as_dict()
    assert set(finding) == {"name", "passed", "reason", "message", "seconds"}
    assert finding["passed"] is False and finding["reason"] == "static.syntax"


def test_syntax_error_names_the_line():
    result = failed(candidate("    return (v,\n"))
    assert result.reason == "static.syntax"
    assert "line" in result.message


def test_checks_stop_at_the_first_failure():
    results = check_static("import os\n")
    assert [r.passed for r in results][-1] is False and all(r.passed for r in results[:-1])


@pytest.mark.parametrize("signature, fragment", [
    ("q, k, v, beta", "expected (q, k, v, beta"),
    ("q, k, v, beta, chunk_size", "need a default"),
    ("q, k, v, beta, chunk_size=64", "must be 32"),
    ("q, k, beta, v, chunk_size=32", "expected (q, k, v, beta"),
    ("q, k, v, beta, chunk_size=32, *args", "*args"),
    ("q, k, v, beta, chunk_size=32, **kw", "**kwargs"),
    ("q, k, v, beta, chunk_size=32, *, eps", "keyword-only"),
])
def test_wrong_signature_is_rejected(signature, fragment):
    result = failed(candidate(signature=signature))
    assert result.reason == "static.signature"
    assert fragment in result.message and "line 5" in result.message


def test_extra_parameters_with_defaults_are_tolerated():
    assert check_signature(parse(candidate(signature="q, k, v, beta, chunk_size=32, eps=1e-6, *, norm=True"))).passed


def test_missing_or_repeated_entry_point_is_rejected():
    assert failed(HEADER + "def other(q, k, v, beta, chunk_size=32):\n    return q, k\n").reason == "static.signature"
    twice = candidate() + "\n\ndelta_rule_chunkwise = None\n"
    assert "more than once" in failed(twice).message


@pytest.mark.parametrize("line", [
    "import os", "import subprocess", "from pathlib import Path", "import socket", "import numpy",
    "import torch.hub", "from torch.utils import cpp_extension", "from torch.serialization import load",
    "import torch._C", "from . import helpers", "import importlib",
])
def test_imports_outside_the_allow_list_are_rejected(line):
    result = failed(candidate(prelude=line + "\n"))
    assert result.reason == "static.import"
    assert "line 4" in result.message


def test_allowed_submodules_import():
    code = candidate(prelude="import torch.nn.functional as F\nfrom einops import rearrange, einsum\n"
                             "from functools import partial\nfrom typing import Optional\n")
    assert all(r.passed for r in check_static(code))


@pytest.mark.parametrize("body, reason", [
    ("    open('/etc/passwd').read()\n", "static.forbidden_name"),
    ("    eval('1+1')\n", "static.forbidden_name"),
    ("    exec('x = 1')\n", "static.forbidden_name"),
    ("    compile('1', 'f', 'eval')\n", "static.forbidden_name"),
    ("    g = globals()\n", "static.forbidden_name"),
    ("    vars(torch)\n", "static.forbidden_name"),
    ("    raise SystemExit(0)\n", "static.forbidden_name"),
    ("    __import__('os').system('id')\n", "static.dunder"),
    ("    c = q.__class__\n", "static.dunder"),
    ("    b = torch.__builtins__\n", "static.dunder"),
    ("    f = delta_rule_chunkwise.__globals__\n", "static.dunder"),
    ("    torch.os.system('id')\n", "static.forbidden_name"),
    ("    torch.sys.modules.clear()\n", "static.forbidden_name"),
    ("    torch.save(q, 'x.pt')\n", "static.forbidden_name"),
    ("    torch.load('x.pt')\n", "static.forbidden_name"),
    ("    torch.hub.list('a/b')\n", "static.forbidden_name"),
    ("    torch.ops.load_library('x.so')\n", "static.forbidden_name"),
    ("    torch._C._set_grad_enabled(False)\n", "static.forbidden_name"),
    ("    torch.utils.cpp_extension.load_inline('m', '')\n", "static.forbidden_name"),
    ("    torch.manual_seed(0)\n", "static.forbidden_name"),
    ("    q.numpy().tofile('/tmp/x')\n", "static.forbidden_name"),
    ("    getattr(torch, 'o' + 's')\n", "static.forbidden_name"),
    ("    getattr(torch, '__dict__')\n", "static.dunder"),
    ("    getattr(torch, 'save')(q, 'x')\n", "static.forbidden_name"),
    ("    get = getattr\n", "static.forbidden_name"),
    ("    g = (i for i in ()).gi_frame.f_back\n", "static.forbidden_name"),
    ("    global STATE\n", "static.module_mutation"),
])
def test_forbidden_construct_is_rejected_with_its_line(body, reason):
    result = failed(candidate(body + BODY))
    assert result.reason == reason, result
    assert "line 6" in result.message


def test_literal_getattr_of_a_plain_name_is_allowed():
    assert all(r.passed for r in check_static(candidate("    dt = getattr(torch, 'float32')\n" + BODY)))


@pytest.mark.parametrize("body", [
    "    torch.matmul = lambda a, b: a\n",
    "    import torch.nn.functional as F\n    F.cross_entropy = None\n",
    "    t = torch\n    t.exp = torch.sin\n",
    "    torch.nn.functional.softmax += 1\n",
    "    del torch.exp\n",
])
def test_monkey_patching_is_rejected(body):
    result = failed(candidate(body + BODY))
    assert result.reason == "static.module_mutation"
    assert "attribute" in result.message


def test_state_kept_in_a_module_level_object_is_rejected():
    result = failed(candidate("    CACHE['v'] = v\n" + BODY, prelude="CACHE = {}\n"))
    assert result.reason == "static.module_mutation" and "CACHE" in result.message


def test_local_item_assignment_is_allowed():
    body = "    o = torch.zeros_like(v)\n    o[:, :, 0] = v[:, :, 0]\n    return o, k.transpose(-1, -2) @ v\n"
    assert all(r.passed for r in check_static(candidate(body)))


def test_oversized_files_are_rejected():
    big = candidate(prelude="".join(f"X{i} = {i}\n" for i in range(3000)))
    assert failed(big).reason == "static.size"
    wide = candidate(prelude="X = [" + "1," * 40000 + "]\n")
    assert failed(wide).reason == "static.size"


def test_renamed_variables_comments_and_docstrings_are_still_duplicates():
    renamed = (BASELINE.replace("k_beta", "kb").replace("strictly_causal", "lower")
               .replace('"""The baseline', '"""A copy of the baseline') + "\n# a moved comment\n")
    renamed = renamed.replace("    B, H, L, Dk = q.shape\n", "    # shapes\n    B, H, L, Dk = q.shape\n")
    assert renamed != BASELINE
    assert fingerprint(renamed) == fingerprint(BASELINE)
    result = failed(renamed, {fingerprint(BASELINE): "0000 baseline"})
    assert result.reason == "duplicate" and "0000 baseline" in result.message


def test_a_changed_constant_or_operation_is_not_a_duplicate():
    assert fingerprint(BASELINE.replace("tril(-1)", "tril(-2)")) != fingerprint(BASELINE)
    assert fingerprint(BASELINE.replace("S = S + k", "S = S - k")) != fingerprint(BASELINE)
    assert check_duplicate(BASELINE.replace("** -0.5", "** -0.25"), [fingerprint(BASELINE)]).passed


def test_fingerprint_of_unparsable_code_is_stable():
    assert fingerprint("def f(:\n  x") == fingerprint("def f(:  \n x")


def test_parses_from_many_threads_run_one_at_a_time(monkeypatch):
    """CPython 3.11-3.12 may fail two concurrent ast.parse calls with SystemError (gh-106905, seen here with two
    executor slots): every parse of the controller (the checks, the mutation engine, the reply parser) goes
    through one lock."""
    import ast
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from agent.mutations import locate
    from agent.parse import _parsable_prefix

    real_parse, inside, most = ast.parse, [0], [0]
    count_lock = threading.Lock()

    def watched_parse(*args, **kwargs):
        with count_lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.002)                       # a long parse: another thread would get in now
        try:
            return real_parse(*args, **kwargs)
        finally:
            with count_lock:
                inside[0] -= 1

    monkeypatch.setattr(ast, "parse", watched_parse)
    callers = [lambda: check_static(BASELINE), lambda: locate(BASELINE),
               lambda: _parsable_prefix(BASELINE + "\nThat is the whole change.\n")]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: callers[i % 3](), range(24)))
    assert all(first_failure(r) is None for r in results[0::3]) and all(r is not None for r in results[1::3])
    assert results[2].rstrip() == BASELINE.rstrip()
    assert most[0] == 1
