"""Runs one evaluation in a fresh, isolated worker process and always returns a result dict.

FIRST VERSION (to be hardened by the checks issue): fresh subprocess in its own process group,
scrubbed environment, temporary working directory, wall-clock timeout that kills the group.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sandbox.result import failure

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
            "LD_LIBRARY_PATH", "CUDA_HOME", "TRITON_CACHE_DIR")


def scrubbed_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    env["PYTHONPATH"] = str(PACKAGE_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_isolated(candidate: Path | str, *, profile: str = "smoke", seeds=(0,), model: str = "delta_net",
                 device: str = "auto", timeout_s: float = 3600.0, extra_args: tuple[str, ...] = ()) -> dict:
    """Evaluate a candidate (a Path to a file, or the code as a str) in a worker; never raises for its failures."""
    workdir = Path(tempfile.mkdtemp(prefix="archer-eval-"))
    try:
        code = candidate.read_text() if isinstance(candidate, Path) else str(candidate)
        (workdir / "candidate.py").write_text(code)
        cmd = [sys.executable, "-m", "sandbox", "eval", "--candidate", "candidate.py", "--profile", profile,
               "--seeds", ",".join(str(s) for s in seeds), "--model", model, "--device", device,
               "--out", "result.json", *extra_args]
        log = open(workdir / "log.txt", "wb")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=workdir, env=scrubbed_env(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
        log.close()
        tail = (workdir / "log.txt").read_bytes()[-4000:].decode("utf-8", "replace")
        if rc is None:
            return failure("timeout", "timeout", f"killed after {timeout_s:.0f} s wall-clock", log_tail=tail,
                           timings={"total_s": time.monotonic() - t0})
        try:
            return json.loads((workdir / "result.json").read_text())
        except (OSError, ValueError):
            return failure("crashed", "worker_died", f"worker exited with code {rc} and wrote no result",
                           log_tail=tail, timings={"total_s": time.monotonic() - t0})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
