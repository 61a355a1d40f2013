"""Isolation: the environment is scrubbed, the audit hook refuses what it should in a real process,
the restricted builtins hold, the network namespace blocks connections, deaths map to statuses,
and a real worker run returns its result over the pipe and leaves no process or directory behind."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sandbox import guard, isolation
from sandbox.isolation import classify_death, parse_result, run_isolated, scrubbed_env

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "sandbox" / "naive.py"


def test_environment_keeps_the_allow_list_and_drops_anything_like_a_credential(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/lib")
    monkeypatch.setenv("LC_ALL", "sk-live-looks-like-a-key")
    monkeypatch.setattr(isolation, "KEEP_ENV", isolation.KEEP_ENV + ("OPENAI_API_KEY", "GITHUB_TOKEN"))
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_abc")
    env = scrubbed_env(tmp_path)
    assert env["LANG"] == "C.UTF-8" and env["LD_LIBRARY_PATH"] == "/opt/lib"
    assert "sk-canary" not in json.dumps(env) and "ghp_abc" not in json.dumps(env)
    assert "LC_ALL" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HOME"].startswith(str(tmp_path)) and env["TMPDIR"].startswith(str(tmp_path))
    assert not env["TRITON_CACHE_DIR"].startswith(str(tmp_path)), "compiled kernels outlive the evaluation"
    assert not env["PYTHONPYCACHEPREFIX"].startswith(str(tmp_path)) and "PYTHONDONTWRITEBYTECODE" not in env
    monkeypatch.setenv("ARCHER_CACHE", "/srv/archer")
    assert scrubbed_env(tmp_path)["PYTHONPYCACHEPREFIX"] == "/srv/archer/pycache"
    assert scrubbed_env(tmp_path)["TRITON_CACHE_DIR"] == "/srv/archer/triton"
    monkeypatch.setenv("ARCHER_KERNEL_CACHE", "/srv/kernels")
    assert scrubbed_env(tmp_path)["TRITON_CACHE_DIR"] == "/srv/kernels"


HARDENED = textwrap.dedent("""
    import json, os, socket, subprocess, sys
    from sandbox import guard
    spare = os.dup(1)
    guard.harden_process()
    attempts = {
        "socket": lambda: socket.socket(),
        "subprocess": lambda: subprocess.run(["true"]),
        "fork": os.fork,
        "write_outside": lambda: open(sys.argv[1], "w"),
        "read_outside": lambda: open(sys.argv[2]).read(),
        "mkdir_outside": lambda: os.mkdir(sys.argv[1] + ".d"),
        "open_descriptor": lambda: os.fdopen(spare, "w"),
        "gc_walk": lambda: __import__("gc").get_objects(),
        "write_inside": lambda: open("inside.txt", "w").close(),
        "import_torch_submodule": lambda: __import__("torch.nn.functional"),
    }
    outcome = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            outcome[name] = "allowed"
        except guard.SandboxViolation as e:
            outcome[name] = "refused"
    print(json.dumps(outcome))
""")


def test_hardened_process_refuses_network_processes_and_files_outside_its_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("labels")
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", HARDENED, str(outside / "written.txt"), str(secret)], cwd=work,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"})
    outcome = json.loads(out.stdout.strip().splitlines()[-1])
    assert outcome.pop("write_inside") == "allowed" and outcome.pop("import_torch_submodule") == "allowed"
    assert set(outcome.values()) == {"refused"}, outcome
    assert not (outside / "written.txt").exists() and not (outside / "written.txt.d").exists()
    assert (work / "inside.txt").exists()


BYTECODE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import early_module
    from sandbox import guard
    guard.harden_process()
    import late_module
    print(early_module.VALUE + late_module.VALUE)
""")


def test_worker_bytecode_is_cached_before_the_guard_and_late_imports_still_work(tmp_path):
    """The isolation's PYTHONPYCACHEPREFIX: modules imported before the guard leave their bytecode in the
    cache; a module first imported after it loads (compiled in memory) and leaves nothing behind."""
    modules, work, cache = tmp_path / "modules", tmp_path / "work", tmp_path / "pycache"
    modules.mkdir()
    work.mkdir()
    (modules / "early_module.py").write_text("VALUE = 40\n")
    (modules / "late_module.py").write_text("VALUE = 2\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for _ in range(2):      # the second run reads the early module's cached bytecode back under the guard
        out = subprocess.run([sys.executable, "-c", BYTECODE, str(modules)], cwd=work, capture_output=True,
                             text=True, timeout=120, env={**env, "PYTHONPATH": str(ROOT),
                                                          "PYTHONPYCACHEPREFIX": str(cache)})
        assert out.returncode == 0 and out.stdout.strip() == "42", out.stderr
        cached = {p.name.split(".")[0] for p in cache.rglob("*.pyc")}
        assert {"early_module", "guard", "static_checks"} <= cached and "late_module" not in cached, cached
    assert not list(modules.rglob("*.pyc")), "bytecode goes to the cache, never beside the sources"


def test_candidate_builtins_have_no_open_exec_or_free_import(tmp_path):
    (tmp_path / "candidate.py").write_text(textwrap.dedent("""
        import torch
        def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
            return v, k
    """))
    fn = guard.load_candidate(tmp_path / "candidate.py")
    table = fn.__globals__["__builtins__"]
    for name in ("open", "exec", "eval", "compile", "input", "breakpoint", "globals", "vars", "SystemExit"):
        assert name not in table
    with pytest.raises(ImportError, match="not allowed"):
        table["__import__"]("os")
    with pytest.raises(ImportError, match="hub"):
        table["__import__"]("torch.hub")
    with pytest.raises(guard.SandboxViolation):
        table["getattr"](fn, "__globals__")
    assert table["__import__"]("torch.nn.functional", fromlist=["relu"]).relu


def test_a_module_that_fails_at_import_is_reported_not_hidden(tmp_path):
    (tmp_path / "candidate.py").write_text("import os\n\n\ndef delta_rule_chunkwise(q, k, v, beta, chunk_size=32):\n"
                                           "    return v, k\n")
    with pytest.raises(ImportError, match="'os' is not allowed"):
        guard.load_candidate(tmp_path / "candidate.py")


@pytest.mark.skipif(not isolation.network_namespace_prefix(), reason="this OS refuses unprivileged network namespaces")
def test_network_namespace_refuses_connections_to_the_host():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    probe = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
             "    print('connected')\nexcept OSError as e:\n    print('refused', e)\n")
    inside = subprocess.run([*isolation.network_namespace_prefix(), sys.executable, "-c", probe],
                            capture_output=True, text=True, timeout=60)
    outside = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    server.close()
    assert inside.stdout.startswith("refused") and outside.stdout.startswith("connected")


@pytest.mark.parametrize("rc, killed_for, tail, output_full, expected", [
    (None, "timeout", "", False, ("timeout", "timeout")),
    (None, "memory", "", False, ("oom", "memory_limit")),
    (-signal.SIGXCPU, "", "", False, ("timeout", "cpu_time")),
    (-signal.SIGXFSZ, "", "", False, ("crashed", "output_limit")),
    (1, "", "x" * 100, True, ("crashed", "output_limit")),
    (1, "", "Traceback\nMemoryError", False, ("oom", "memory_limit")),
    (-signal.SIGKILL, "", "", False, ("oom", "killed")),
    (3, "", "Traceback\nValueError: broken worker", False, ("crashed", "worker_died")),
])
def test_a_worker_that_sent_no_result_gets_a_status_and_reason(rc, killed_for, tail, output_full, expected):
    status, reason, message = classify_death(rc, killed_for, tail, timeout_s=5, memory_mb=100, output_full=output_full)
    assert (status, reason) == expected and message and "\n" not in message


def test_only_a_well_formed_result_is_believed():
    assert parse_result(b'{"status": "ok", "scores": {}}') == {"status": "ok", "scores": {}}
    assert parse_result(b'{"status": "excellent"}') is None
    assert parse_result(b"") is None
    assert parse_result(b"\xff\xfe") is None
    assert parse_result(b'["ok"]') is None


def test_static_failures_are_answered_without_a_worker():
    result = run_isolated("import os\n", timeout_s=5)
    assert result["status"] == "invalid" and result["reason"] == "static.import"
    assert result["checks"][-1]["reason"] == "static.import"
    assert "not started" in result["execution"]["isolation"]["worker"]


def test_worker_result_comes_over_the_pipe_and_nothing_is_left_behind(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-isolation")
    result = run_isolated(BASELINE, device="cpu", timeout_s=300, extra_args=("--checks-only",), memory_mb=4096)
    assert result["status"] == "ok", result["message"] + result["log_tail"]
    assert [c["name"] for c in result["checks"]][-1] == "trains" and all(c["passed"] for c in result["checks"])
    info = result["execution"]["isolation"]
    assert info["exit_code"] == 0 and info["network"] in ("namespace", "audit_hook")
    assert not Path(info["workdir"]).exists()
    assert not Path(f"/proc/{info['pid']}").exists()
    assert "sk-canary-isolation" not in json.dumps(result)


def test_watchdog_kills_the_process_group_past_the_memory_limit():
    hog = "import time\nblock = bytearray(400 << 20)\ntime.sleep(120)\n"
    proc = subprocess.Popen([sys.executable, "-c", hog], start_new_session=True)
    rc, killed_for = isolation.watch(proc, timeout_s=120, memory_bytes=200 << 20)
    assert (rc, killed_for) == (None, "memory")
    assert not live_members(proc.pid)


def test_timeout_kills_every_process_of_the_group():
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    rc, killed_for = isolation.watch(proc, timeout_s=1, memory_bytes=1 << 40)
    assert (rc, killed_for) == (None, "timeout")
    assert not live_members(proc.pid)


def live_members(pgid: int, settle_s: float = 10.0) -> list[int]:
    """Processes of the group still running once SIGKILL has had up to settle_s to land (killed ones may linger
    as zombies until reaped, and a loaded machine takes a moment to tear a process down)."""
    deadline = time.monotonic() + settle_s
    while (members := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def test_cpu_time_limit_reads_as_a_timeout_not_an_oom():
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    isolation.apply_limits(proc.pid, {isolation.resource.RLIMIT_CPU: 1})
    rc, killed_for = isolation.watch(proc, timeout_s=120, memory_bytes=1 << 40)
    status, reason, _ = classify_death(rc, killed_for, "", timeout_s=120, memory_mb=1024, output_full=False)
    assert (rc, status, reason) == (-signal.SIGXCPU, "timeout", "cpu_time")
