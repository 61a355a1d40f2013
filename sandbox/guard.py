"""Narrows what the worker process may do once a candidate is about to run, and loads the candidate.

`harden_process` installs a Python audit hook (it cannot be removed) that refuses sockets, new
processes, signals to other processes, tracing and heap walking, writes outside the working
directory, and reads outside Python's own files, the sandbox package and the working directory.
`load_candidate` executes the file with a restricted `__builtins__`: no open, exec, eval, compile,
input or breakpoint, and an `__import__` limited to the static checks' allow-list. Audit hooks
see only what Python itself does: C code (torch's kernels, CUDA) is contained by the process
isolation of sandbox/isolation.py, not here. Tested by tests/test_isolation.py and tests/test_corpus.py.
"""
from __future__ import annotations

import builtins
import os
import sys
import sysconfig
import types
from pathlib import Path

from sandbox.static_checks import ALLOWED_IMPORTS, ENTRY, FORBIDDEN_ATTRS, FORBIDDEN_MODULES

SANDBOX_DIR = Path(__file__).resolve().parent
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
BLOCKED_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "os.chdir", "os.fchdir", "sys.settrace",
    "sys.setprofile", "sys._current_frames", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "resource.setrlimit", "resource.prlimit", "urllib.Request", "http.client.connect", "ftplib.connect",
    "smtplib.connect", "webbrowser.open", "os.startfile", "builtins.input", "pdb.Pdb",
})
PATH_EVENTS = frozenset({
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink", "os.link",
    "os.truncate", "os.utime", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr",
    "shutil.rmtree", "shutil.copyfile", "shutil.move", "shutil.copytree", "shutil.make_archive",
})
SAFE_BUILTINS = (
    "abs", "all", "any", "bool", "callable", "chr", "complex", "dict", "divmod", "enumerate", "filter",
    "float", "format", "frozenset", "hash", "int", "isinstance", "issubclass", "iter", "len", "list",
    "map", "max", "min", "next", "object", "ord", "pow", "print", "range", "repr", "reversed", "round",
    "set", "slice", "sorted", "str", "sum", "super", "tuple", "type", "zip", "id", "bytes", "staticmethod",
    "classmethod", "property", "NotImplemented", "Ellipsis", "None", "True", "False", "__build_class__",
    "Exception", "ArithmeticError", "AssertionError", "AttributeError", "IndexError", "KeyError",
    "LookupError", "NotImplementedError", "OverflowError", "RuntimeError", "StopIteration", "TypeError",
    "ValueError", "ZeroDivisionError", "FloatingPointError", "RecursionError", "MemoryError", "Warning",
)


class SandboxViolation(PermissionError):
    """Raised inside the worker when the candidate reaches for something the sandbox forbids."""


class Policy:
    """The audit hook's decisions; a class only so that tests can inspect one without installing it."""

    def __init__(self, workdir: Path, read_roots: tuple[Path, ...] = (), allow_subprocess: bool = False):
        self.workdir = workdir.resolve()
        roots = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        roots |= {Path(p).resolve() for p in sysconfig.get_paths().values()}
        roots |= {Path(p).resolve() for p in sys.path if p and Path(p).resolve() != SANDBOX_DIR.parent}
        if sys.pycache_prefix:      # the bytecode of modules imported late (isolation.bytecode_cache_dir)
            roots.add(Path(sys.pycache_prefix).resolve())
        roots.discard(Path("/"))
        self.read_roots = tuple(roots | {SANDBOX_DIR, self.workdir, Path("/dev/null"), Path("/dev/urandom"),
                                         *(Path(p).resolve() for p in read_roots)})
        self.allow_subprocess = allow_subprocess

    def inside(self, path, roots) -> bool:
        p = Path(os.path.realpath(os.fsdecode(path)))
        return any(p == r or r in p.parents for r in roots)

    def check(self, event: str, args: tuple) -> None:
        if event.startswith("socket."):
            raise SandboxViolation(f"network access is disabled in the archer worker ({event})")
        if event in BLOCKED_EVENTS:
            if self.allow_subprocess and event in ("subprocess.Popen", "os.posix_spawn", "os.exec"):
                return
            raise SandboxViolation(f"{event} is disabled in the archer worker")
        if event == "open":
            self.check_open(*args[:3])
        elif event in PATH_EVENTS:
            for path in args:
                if isinstance(path, (str, bytes, os.PathLike)) and not self.inside(path, (self.workdir,)):
                    raise SandboxViolation(f"{event} outside the working directory: {os.fsdecode(path)}")

    def check_open(self, path, mode, flags) -> None:
        if isinstance(path, int):
            raise SandboxViolation(f"opening file descriptor {path} is disabled in the archer worker")
        if path is None:
            return
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        if writing:
            if not self.inside(path, (self.workdir, Path("/dev/null"))):
                raise SandboxViolation(f"writing outside the working directory is disabled: {os.fsdecode(path)}")
        elif not self.inside(path, self.read_roots):
            raise SandboxViolation(f"reading {os.fsdecode(path)} is disabled in the archer worker")


def harden_process(*, workdir: Path | str | None = None, read_roots: tuple[str, ...] = (),
                   allow_subprocess: bool = False) -> None:
    """Called by the worker before the candidate is imported; irreversible for this process.

    workdir defaults to the current directory (the isolation's temporary directory). Open any file
    the worker needs later (its result pipe, say) before calling this: file descriptors cannot be
    opened afterwards. allow_subprocess is for a worker that compiles kernels out of process.
    """
    policy = Policy(Path(workdir or os.getcwd()), tuple(Path(p) for p in read_roots), allow_subprocess)

    def audit(event: str, args: tuple) -> None:
        policy.check(event, args)

    sys.addaudithook(audit)


def restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
    parts = name.split(".")
    if level or parts[0] not in ALLOWED_IMPORTS:
        raise ImportError(f"import of {name!r} is not allowed in a candidate")
    if parts[0] != "__future__":
        for part in list(parts[1:]) + [f for f in (fromlist or ()) if f != "*"]:
            if part.startswith("_") or part in FORBIDDEN_ATTRS or part in FORBIDDEN_MODULES:
                raise ImportError(f"import of {name!r} ({part}) is not allowed in a candidate")
    return __import__(name, globals, locals, fromlist, level)


def guarded_getattr(obj, name, *default):
    if not isinstance(name, str) or name.startswith("_") or name in FORBIDDEN_ATTRS or name in FORBIDDEN_MODULES:
        raise SandboxViolation(f"getattr(..., {name!r}) is not allowed in a candidate")
    return getattr(obj, name, *default)


def guarded_hasattr(obj, name):
    if not isinstance(name, str) or name.startswith("_"):
        raise SandboxViolation(f"hasattr(..., {name!r}) is not allowed in a candidate")
    return hasattr(obj, name)


def candidate_builtins() -> dict:
    table = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    table.update(__import__=restricted_import, getattr=guarded_getattr, hasattr=guarded_hasattr)
    return table


def load_candidate(path: Path | str):
    """Execute the candidate file as a fresh module with restricted builtins; return its entry point.

    Call only after the static checks passed. Raises ImportError (or what the module's top level
    raised) when it cannot be loaded, TypeError when the entry point is missing or not callable.
    """
    path = Path(path)
    source = path.read_text()
    module = types.ModuleType("candidate")
    module.__file__ = str(path)
    module.__dict__["__builtins__"] = candidate_builtins()
    exec(compile(source, str(path), "exec"), module.__dict__)
    fn = module.__dict__.get(ENTRY)
    if not callable(fn):
        raise TypeError(f"the candidate defines no callable {ENTRY}")
    return fn
