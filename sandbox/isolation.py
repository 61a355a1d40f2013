"""Runs one evaluation in a fresh, isolated worker process and always returns a result dict.

Isolated: the environment (an allow-list; anything named or shaped like a key, token, secret,
password or credential is dropped), the working directory (a fresh temporary one, removed after;
HOME and TMPDIR point inside it), the network (a new network namespace via `unshare --net` where the
OS allows it, and in any case guard.harden_process refuses sockets), resources (RLIMIT_CPU, NPROC,
NOFILE, FSIZE caps the log, CORE 0; memory by RLIMIT_AS on CPU and by a resident-memory watchdog,
the only limit on GPU runs since CUDA needs a huge address space), wall-clock time (the whole process
group is killed), and the result (read from a pipe the worker opened before the candidate was
imported: a file the candidate writes is never read). Code that fails the static checks is
answered here without starting a worker. Inside the worker, guard.py refuses
processes, file access outside the working directory and Python-level introspection. A spare worker
(`Spares`) is started the same way before its job exists and handed the job over stdin: only the start moves
earlier; every job still gets a process, directory and pipe of its own.
Not isolated: GPU memory and time of other processes on the same GPU (CUDA has no per-process
limit other than what the worker sets), the file system's readable parts for C code, side
channels, and kernel or driver exploits; this is a guard against accidents and casual hostility,
not a container. Tested by tests/test_isolation.py, tests/test_corpus.py and tests/test_spares.py.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sandbox.result import SPARE_READY, STATUSES, failure
from sandbox.static_checks import check_static

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
            "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "PYTORCH_CUDA_ALLOC_CONF", "CUBLAS_WORKSPACE_CONFIG")
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASS|CRED|AUTH|COOKIE|SESSION|PRIVATE|CERT", re.I)
SECRET_VALUE = re.compile(r"\b(sk-|ghp_|gho_|github_pat_|xox[abp]-|AKIA|hf_|glpat-)|-----BEGIN")
LOG_TAIL_BYTES = 4000
MAX_RESULT_BYTES = 64 << 20
POLL_S = 0.1
CPU_GRACE_S = 5           # hard CPU limit above the soft one, so SIGXCPU (a timeout) comes first
SPARE_DELAY_S = 5.0       # a job's own start (imports or checks, capture) ends within this on an H100
OOM_MARKERS = ("MemoryError", "OutOfMemoryError", "out of memory", "can't allocate memory", "std::bad_alloc")


def cache_root() -> Path:
    """What workers keep between evaluations: $ARCHER_CACHE, else archer under the user's cache directory."""
    if os.environ.get("ARCHER_CACHE"):
        return Path(os.environ["ARCHER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "archer"


def kernel_cache_dir() -> Path:
    """The compiled fused kernels of sandbox/kernels.py ($ARCHER_KERNEL_CACHE, else triton/ in cache_root()).
    A worker writes it only before its guard is armed, so candidate code never can; a cold cache costs 4-6 s
    of compiling on an H100."""
    if os.environ.get("ARCHER_KERNEL_CACHE"):
        return Path(os.environ["ARCHER_KERNEL_CACHE"])
    return cache_root() / "triton"


def bytecode_cache_dir() -> Path:
    """Python's compiled bytecode for the worker's imports (PYTHONPYCACHEPREFIX): pycache/ in cache_root().
    Where torch is installed without its bytecode (images built with PYTHONDONTWRITEBYTECODE, pip
    --no-compile) every worker would otherwise compile torch's sources again: 6.4 s of `import torch` on the
    H100 machine here (NOTES.md). Written like the kernel cache: by the worker's imports before its guard is
    armed; after it, writes fail quietly and imports compile in memory."""
    return cache_root() / "pycache"


def scrubbed_env(workdir: Path) -> dict[str, str]:
    """The worker's whole environment: an allow-list, minus anything that looks like a credential."""
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    env = {k: v for k, v in env.items() if not SECRET_NAME.search(k) and not SECRET_VALUE.search(v)}
    env.update(PYTHONPATH=str(PACKAGE_ROOT), PYTHONUNBUFFERED="1", PYTHONPYCACHEPREFIX=str(bytecode_cache_dir()),
               PYTHONNOUSERSITE="1", HOME=str(workdir / "home"), TMPDIR=str(workdir / "tmp"),
               TRITON_CACHE_DIR=str(kernel_cache_dir()), XDG_CACHE_HOME=str(workdir / "home" / "cache"))
    return env


@functools.lru_cache(maxsize=1)
def network_namespace_prefix() -> tuple[str, ...]:
    """`unshare --net` inside a new user namespace, if this OS lets an unprivileged user do it."""
    unshare = shutil.which("unshare")
    if not unshare:
        return ()
    prefix = (unshare, "--net", "--map-root-user")
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return prefix if ok else ()


def gpu_possible(device: str) -> bool:
    if device == "cpu":
        return False
    if device.startswith("cuda"):
        return True
    return os.environ.get("CUDA_VISIBLE_DEVICES", None) != "" and Path("/dev/nvidiactl").exists()


def user_tasks() -> int:
    """Processes and threads this user runs now: RLIMIT_NPROC counts them all, not just the worker's."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


def resident_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def apply_limits(pid: int, limits: dict[int, int]) -> None:
    for which, value in limits.items():
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        # CPU time: the soft limit sends SIGXCPU (reported as a timeout); at an equal hard limit the
        # kernel would send SIGKILL instead, which reads like the OOM killer
        new_hard = value + CPU_GRACE_S if which == resource.RLIMIT_CPU else value
        if hard != resource.RLIM_INFINITY:
            new_hard = min(new_hard, hard)
        try:
            resource.prlimit(pid, which, (value, new_hard))
        except ProcessLookupError:
            return


def read_all(fd: int, sink: bytearray) -> None:
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(1 << 16):
            if len(sink) < MAX_RESULT_BYTES:
                sink.extend(chunk)


def tail_of(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def classify_death(rc: int | None, killed_for: str, tail: str, *, timeout_s: float, memory_mb: int,
                   output_full: bool) -> tuple[str, str, str]:
    """(status, reason, message) for a worker that sent no result."""
    if killed_for == "timeout":
        return "timeout", "timeout", f"killed after {timeout_s:g} s wall-clock"
    if killed_for == "memory":
        return "oom", "memory_limit", f"killed when its resident memory passed {memory_mb} MiB"
    if rc == -signal.SIGXCPU:
        return "timeout", "cpu_time", "stopped by the CPU-time limit (RLIMIT_CPU)"
    if output_full or rc == -signal.SIGXFSZ:
        return "crashed", "output_limit", ("stopped when its output reached the log cap (RLIMIT_FSIZE): "
                                           "do not print in a loop")
    if any(marker in tail for marker in OOM_MARKERS):
        return "oom", "memory_limit", f"ran out of memory: {last_line(tail)}"
    if rc == -signal.SIGKILL:
        return "oom", "killed", "killed by SIGKILL from outside the evaluator (likely the kernel's OOM killer)"
    detail = f": {last_line(tail)}" if last_line(tail) else ""
    return "crashed", "worker_died", f"worker exited with code {rc} and sent no result{detail}"


class Worker:
    """One isolated worker process: a fresh directory, the scrubbed environment, the limits and a result pipe.

    Started for a job (`python -m sandbox eval ... --result-fd N`) or as a spare (`python -m sandbox spare`),
    which imports, starts CUDA and loads the kernels ahead, then waits for its job's arguments on stdin.
    Raises OSError when the process cannot be started."""

    def __init__(self, job: list[str] | None, *, files: dict[str, str] | None = None, device: str = "auto",
                 gpu: str | None = None, memory_mb: int | None = None, output_mb: int = 64, open_files: int = 1024,
                 isolate_network: bool = True):
        self.workdir = Path(tempfile.mkdtemp(prefix="archer-eval-"))
        self.output_mb = output_mb
        self.key = spare_key(device=device, gpu=gpu, memory_mb=memory_mb, output_mb=output_mb,
                             open_files=open_files, isolate_network=isolate_network)
        self.memory_mb = self.key[2]
        gpu_used = gpu is not None or gpu_possible(device)
        netns = network_namespace_prefix() if isolate_network else ()
        self.isolation = {"network": "namespace" if netns else "audit_hook",
                          "memory": "rss_watchdog" if gpu_used else "rlimit_as+rss_watchdog",
                          "memory_mb": self.memory_mb}
        self.received = bytearray()
        self.proc: subprocess.Popen | None = None
        read_fd = self.result_fd = -1
        try:
            read_fd, self.result_fd = os.pipe()
            for sub in ("home", "tmp"):
                (self.workdir / sub).mkdir()
            for name, text in (files or {}).items():
                (self.workdir / name).write_text(text)
            command = ["spare", "--device", device] if job is None else [*job, "--result-fd", str(self.result_fd)]
            limits = {resource.RLIMIT_NOFILE: open_files, resource.RLIMIT_CORE: 0,
                      resource.RLIMIT_FSIZE: output_mb << 20, resource.RLIMIT_NPROC: user_tasks() + 1024}
            if not gpu_used:
                limits[resource.RLIMIT_AS] = self.memory_mb << 20
            env = scrubbed_env(self.workdir)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(gpu)
                self.isolation["gpu"] = str(gpu)
            with open(self.workdir / "log.txt", "wb") as log:
                self.proc = subprocess.Popen([*netns, sys.executable, "-m", "sandbox", *command], cwd=self.workdir,
                                             env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL if job is not None else subprocess.PIPE,
                                             pass_fds=(self.result_fd,), start_new_session=True)
            apply_limits(self.proc.pid, limits)
        except BaseException:
            for fd in (read_fd, self.result_fd):
                if fd >= 0:
                    os.close(fd)
            self.close()
            raise
        os.close(self.result_fd)          # the worker holds the only write end now
        self.reader = threading.Thread(target=read_all, args=(read_fd, self.received), daemon=True)
        self.reader.start()
        self.isolation.update(pid=self.proc.pid, workdir=str(self.workdir))
        self.fingerprint = sandbox_fingerprint()

    def ready(self) -> bool:
        """Whether a spare has done everything ahead of its job and now waits for it."""
        try:
            return SPARE_READY.encode() in (self.workdir / "log.txt").read_bytes()
        except OSError:
            return False

    def dispatch(self, job: list[str]) -> bool:
        """Hand a spare its job's `eval` arguments; False when it can no longer take them."""
        try:
            self.proc.stdin.write((json.dumps([*job, "--result-fd", str(self.result_fd)]) + "\n").encode())
            self.proc.stdin.close()
            return True
        except OSError:
            return False

    def finish(self, *, timeout_s: float, cpu_s: float, on_start: Callable[[int], None] | None, t0: float) -> dict:
        """Watch the worker through its job and return its result, or a failure saying how it died."""
        apply_limits(self.proc.pid, {resource.RLIMIT_CPU: int(cpu_s)})
        self.isolation["timeout_s"] = timeout_s
        if on_start is not None:
            on_start(self.proc.pid)
        try:
            rc, killed_for = watch(self.proc, timeout_s, self.memory_mb << 20)
        except BaseException:
            kill_group(self.proc.pid)
            raise
        self.reader.join(timeout=5)
        tail = tail_of(self.workdir / "log.txt")
        timings = {"total_s": time.monotonic() - t0}
        result = parse_result(bytes(self.received))
        if result is None:
            output_full = (self.workdir / "log.txt").stat().st_size >= self.output_mb << 20
            status, reason, message = classify_death(rc, killed_for, tail, timeout_s=timeout_s,
                                                     memory_mb=self.memory_mb, output_full=output_full)
            return failure(status, reason, message, log_tail=tail, timings=timings,
                           execution={"isolation": {**self.isolation, "exit_code": rc}})
        result["log_tail"] = tail
        result.setdefault("timings", {}).setdefault("total_s", timings["total_s"])
        result.setdefault("execution", {})["isolation"] = {**self.isolation, "exit_code": rc,
                                                           "killed_after_result": killed_for or ""}
        return result

    def close(self) -> None:
        """Kill what is left of the process group and remove the directory."""
        if self.proc is not None:
            if self.proc.poll() is None:
                kill_group(self.proc.pid)
                self.proc.wait()
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def sandbox_fingerprint() -> tuple:
    """The worker code's modification times: a spare started on older code is not handed a job."""
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in (PACKAGE_ROOT / "sandbox").glob("*.py")))


class Spares:
    """Workers started ahead of their jobs, so that a job skips the worker's start (imports, CUDA, the kernels:
    2.6 s on an H100 by bench/bench_startup.py, NOTES.md). Each job that takes one, or finds none, starts
    the next in its place, `delay_s` later: by then the job's own start (single-threaded, CPU-bound) is over,
    and the spare's imports do not slow it. `close` kills the spares left. Thread-safe: slots share one."""

    def __init__(self, delay_s: float = SPARE_DELAY_S):
        self.delay_s = delay_s
        self._ready: list[Worker] = []
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self, **kwargs) -> None:
        """Start one spare now (Worker's keyword arguments); a spare that cannot start is simply not there."""
        with self._lock:
            if self._closed:
                return
        try:
            worker = Worker(None, **kwargs)
        except OSError:
            return
        with self._lock:
            if not self._closed:
                self._ready.append(worker)
                return
        worker.close()

    def start_later(self, **kwargs) -> None:
        """Start one spare after `delay_s`, unless closed by then."""
        timer = threading.Timer(self.delay_s, lambda: self._fire(timer, kwargs))
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            self._timers.add(timer)
        timer.start()

    def _fire(self, timer: threading.Timer, kwargs: dict) -> None:
        with self._lock:
            self._timers.discard(timer)
        self.start(**kwargs)

    def take(self, key: tuple) -> Worker | None:
        """A live spare started for `key`, or None; spares gone stale on the way are dropped."""
        with self._lock:
            now = sandbox_fingerprint()
            stale = [w for w in self._ready if w.proc.poll() is not None or w.fingerprint != now]
            self._ready = [w for w in self._ready if w not in stale]
            found = next((w for w in self._ready if w.key == key), None)
            if found is not None:
                self._ready.remove(found)
        for w in stale:
            w.close()
        return found

    def waiting(self) -> list[Worker]:
        """The spares started and not yet taken."""
        with self._lock:
            return list(self._ready)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, []
            timers, self._timers = self._timers, set()
        for t in timers:
            t.cancel()
        for w in ready:
            w.close()


def run_isolated(candidate: Path | str, *, profile: str = "smoke", seeds=(0,), model: str = "delta_net",
                 device: str = "auto", timeout_s: float = 3600.0, extra_args: tuple[str, ...] = (),
                 memory_mb: int | None = None, cpu_s: float | None = None, output_mb: int = 64,
                 open_files: int = 1024, isolate_network: bool = True, gpu: str | None = None,
                 on_start: Callable[[int], None] | None = None, spares: Spares | None = None) -> dict:
    """Evaluate a candidate (a Path to a file, or the code as a str) in a worker; never raises for its failures.

    memory_mb defaults to 16 GiB on CPU and 64 GiB of host memory when a GPU may be used; cpu_s
    (a backstop for a worker orphaned by a dead controller) defaults to timeout_s x cores + 60.
    gpu pins the worker to one device (its CUDA_VISIBLE_DEVICES); on_start receives the worker's pid,
    which is also its process group, so an executor can kill it when the controller abandons the work.
    With `spares`, the job goes to a spare worker started alike when one is waiting (its clock starts at the
    hand-over), and a new spare is started for the next job either way.
    """
    t0 = time.monotonic()
    code = candidate.read_text() if isinstance(candidate, Path) else str(candidate)
    if model == "delta_net":
        rejected = static_rejection(code, profile=profile, seeds=seeds, model=model)
        if rejected:
            return rejected
    job = ["eval", "--candidate", "candidate.py", "--profile", profile, "--seeds", ",".join(str(s) for s in seeds),
           "--model", model, "--device", device, *extra_args]
    placement = dict(device=device, gpu=gpu, memory_mb=memory_mb, output_mb=output_mb, open_files=open_files,
                     isolate_network=isolate_network)
    worker = None
    if spares is not None:
        worker = spares.take(spare_key(**placement))
        if worker is not None:
            try:
                (worker.workdir / "candidate.py").write_text(code)
                handed = worker.dispatch(job)
            except OSError:
                handed = False
            if not handed:
                worker.close()
                worker = None
    if worker is not None:
        worker.isolation["worker"] = "spare"
    else:
        try:
            worker = Worker(job, files={"candidate.py": code}, **placement)
        except OSError as e:
            return failure("crashed", "spawn_failed", f"could not start the worker: {e}",
                           execution={"isolation": {"memory_mb": memory_mb, "timeout_s": timeout_s}})
        worker.isolation["worker"] = "started for the job"
    if spares is not None:
        spares.start_later(**placement)
    try:
        cpu_s = cpu_s or timeout_s * (os.cpu_count() or 1) + 60
        return worker.finish(timeout_s=timeout_s, cpu_s=cpu_s, on_start=on_start, t0=t0)
    finally:
        worker.close()


def spare_key(*, device: str, gpu: str | None, memory_mb: int | None, output_mb: int, open_files: int,
              isolate_network: bool) -> tuple:
    """What a spare must have been started with to take a job placed so (Worker.key)."""
    gpu_used = gpu is not None or gpu_possible(device)
    return (device, gpu, memory_mb or (65536 if gpu_used else 16384), output_mb, open_files, isolate_network)


def static_rejection(code: str, *, profile: str, seeds, model: str) -> dict | None:
    """The worker's "invalid" result for code that fails the static checks, without starting a worker."""
    checks = check_static(code)
    if checks[-1].passed:
        return None
    return failure("invalid", checks[-1].reason, checks[-1].message, checks=[c.as_dict() for c in checks],
                   model=model, profile=profile, seeds=[int(s) for s in seeds],
                   candidate_sha256=hashlib.sha256(code.encode()).hexdigest(),
                   execution={"isolation": {"worker": "not started: failed the static checks"}})


def watch(proc: subprocess.Popen, timeout_s: float, memory_bytes: int) -> tuple[int | None, str]:
    """Wait for the worker; kill its process group at the deadline or past the memory limit."""
    deadline = time.monotonic() + timeout_s
    killed_for = ""
    while True:
        try:
            rc = proc.wait(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            killed_for = "timeout"
        elif resident_bytes(proc.pid) > memory_bytes:
            killed_for = "memory"
        if killed_for:
            kill_group(proc.pid)
            proc.wait()
            return None, killed_for
    kill_group(proc.pid)
    return rc, killed_for


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def parse_result(data: bytes) -> dict | None:
    """The worker's result from the pipe, or None when it sent nothing usable."""
    try:
        result = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("status") not in STATUSES:
        return None
    return result
