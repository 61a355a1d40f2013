"""Static checks of a candidate naive.py: pure functions over its source, stdlib only, milliseconds.

The controller runs `check_static` before spending anything and the worker runs it again as defence
in depth. These checks are the first layer only: a deny-list cannot name every path through torch,
so sandbox/guard.py and sandbox/isolation.py contain what slips past. Tested by
tests/test_static_checks.py and tests/test_corpus.py.
"""
from __future__ import annotations

import ast
import hashlib
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

ENTRY = "delta_rule_chunkwise"
REQUIRED_PARAMS = ("q", "k", "v", "beta", "chunk_size")
CHUNK_SIZE_DEFAULT = 32
ALLOWED_IMPORTS = ("torch", "math", "einops", "typing", "functools", "__future__")
MAX_BYTES = 100_000
MAX_LINES = 2_000
MAX_NODES = 25_000

# builtins that reach files, code objects, frames or the process; getattr is checked separately
FORBIDDEN_BUILTINS = frozenset({
    "open", "file", "exec", "eval", "compile", "globals", "locals", "vars", "dir", "input", "breakpoint",
    "help", "exit", "quit", "setattr", "delattr", "memoryview", "SystemExit", "KeyboardInterrupt",
    "GeneratorExit", "BaseException", "copyright", "credits", "license",
})
# stdlib and third-party modules that torch, einops, typing and functools expose as attributes
FORBIDDEN_MODULES = frozenset({
    "os", "sys", "subprocess", "shutil", "pathlib", "io", "socket", "builtins", "importlib", "ctypes",
    "multiprocessing", "threading", "signal", "time", "inspect", "gc", "pickle", "marshal", "tempfile",
    "glob", "platform", "urllib", "urllib3", "http", "requests", "asyncio", "concurrent",
    "selectors", "mmap", "resource", "pty", "fcntl", "code", "codeop", "runpy", "traceback", "logging",
    "operator", "copyreg", "zipfile", "tarfile", "sqlite3", "ssl", "ftplib", "smtplib", "webbrowser",
    "pdb", "linecache", "sysconfig", "site", "zipimport", "pkgutil", "types", "codecs", "fileinput",
    "atexit", "faulthandler", "ast", "json", "shelve", "dbm", "posix", "nt",
    "posixpath", "ntpath", "genericpath", "getpass", "pwd", "grp", "uuid", "numpy", "np", "sympy",
    "yaml", "triton", "filelock", "fsspec", "setuptools", "distutils", "pkg_resources", "dill",
    "cloudpickle", "ctypeslib",
})
# torch escape hatches (files, compiled code, global hooks, other processes, global state)
FORBIDDEN_ATTRS = frozenset({
    "load", "save", "hub", "cpp_extension", "load_inline", "ops", "library", "jit", "compile",
    "from_file", "serialization", "package", "distributed", "collect_env", "file_baton", "jiterator",
    "overrides", "TorchFunctionMode", "TorchDispatchMode", "get_type_hints", "ForwardRef", "sympify",
    "tofile", "fromfile", "dump", "dumps", "loads", "grad_fn", "next_functions", "register_hook",
    "register_forward_hook", "register_forward_pre_hook", "register_module_forward_hook",
    "register_module_forward_pre_hook", "register_module_full_backward_hook", "saved_tensors_hooks",
    "register_full_backward_hook", "manual_seed", "seed", "set_rng_state", "set_default_dtype",
    "set_default_device", "set_default_tensor_type", "set_num_threads", "set_num_interop_threads",
    "set_per_process_memory_fraction", "set_flush_denormal", "set_anomaly_enabled", "set_grad_enabled",
    "use_deterministic_algorithms", "share_memory_", "f_globals", "f_locals", "f_builtins", "f_back",
    "f_code", "tb_frame", "tb_next", "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "co_code",
    "co_consts", "func_globals", "mro", "graphs", "CUDAGraph", "DataLoader",
    "register_post_accumulate_grad_hook", "register_full_backward_pre_hook", "profiler", "backends", "fx",
    "export", "onnx", "monitor", "futures",
})
ALLOWED_DUNDERS = frozenset({"__name__", "__future__", "__all__"})


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    reason: str = ""
    message: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """The CheckFinding dict of sandbox/result.py."""
        return {"name": self.name, "passed": self.passed, "reason": self.reason, "message": self.message,
                "seconds": self.seconds}


def ok(name: str) -> CheckResult:
    return CheckResult(name, True)


def fail(name: str, reason: str, message: str) -> CheckResult:
    return CheckResult(name, False, reason, message)


def dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__") and name not in ALLOWED_DUNDERS


def dotted(node: ast.AST) -> str:
    """'torch.nn.functional' for an attribute chain rooted at a name, else '...'."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "...")
    return ".".join(reversed(parts))


def root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def check_size(code: str, *, max_bytes: int = MAX_BYTES, max_lines: int = MAX_LINES) -> CheckResult:
    size = len(code.encode("utf-8", "replace"))
    lines = code.count("\n") + 1
    if size > max_bytes:
        return fail("size", "static.size", f"the file is {size} bytes; the limit is {max_bytes}")
    if lines > max_lines:
        return fail("size", "static.size", f"the file has {lines} lines; the limit is {max_lines}")
    return ok("size")


# CPython 3.11 and 3.12 keep the AST builder's recursion depth in state shared by all threads (gh-106905):
# two parses at once, as the executor's slots and the proposer do, can fail with "SystemError: AST
# constructor recursion depth mismatch". Every ast.parse of the controller goes through ast_parse.
_PARSE_LOCK = threading.Lock()


def ast_parse(code: str, filename: str = "<unknown>") -> ast.Module:
    """ast.parse, one thread at a time."""
    with _PARSE_LOCK:
        return ast.parse(code, filename=filename)


def parse(code: str) -> ast.Module:
    """ast.parse that turns every way parsing can fail into SyntaxError."""
    try:
        return ast_parse(code, filename="naive.py")
    except SyntaxError:
        raise
    except (ValueError, RecursionError, MemoryError) as e:
        raise SyntaxError(f"{type(e).__name__}: {e}") from None


def check_syntax(code: str) -> CheckResult:
    try:
        parse(code)
    except SyntaxError as e:
        where = f"line {e.lineno}: " if e.lineno else ""
        text = f" in `{e.text.strip()[:80]}`" if e.text and e.text.strip() else ""
        return fail("syntax", "static.syntax", f"{where}{e.msg}{text}")
    return ok("syntax")


def check_nodes(tree: ast.AST, *, max_nodes: int = MAX_NODES) -> CheckResult:
    count = sum(1 for _ in ast.walk(tree))
    if count > max_nodes:
        return fail("tree_size", "static.size", f"the file has {count} syntax-tree nodes; the limit is {max_nodes}")
    return ok("tree_size")


def check_signature(tree: ast.Module) -> CheckResult:
    """One top-level `def delta_rule_chunkwise(q, k, v, beta, chunk_size=32, ...)`.

    Extra parameters after chunk_size are tolerated when they have defaults (positional or
    keyword-only), so callers that pass only the five required ones work; *args, **kwargs and
    positional-only markers are rejected so that a misspelt keyword fails loudly.
    """
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == ENTRY]
    rebinds = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == ENTRY and isinstance(n.ctx, ast.Store)]
    if not defs:
        return fail("signature", "static.signature", f"no top-level `def {ENTRY}(q, k, v, beta, chunk_size=32)`")
    if len(defs) > 1 or rebinds:
        line = (defs[1] if len(defs) > 1 else rebinds[0]).lineno
        return fail("signature", "static.signature", f"line {line}: `{ENTRY}` is defined more than once")
    fn = defs[0]
    where = f"line {fn.lineno}: "
    if isinstance(fn, ast.AsyncFunctionDef):
        return fail("signature", "static.signature", f"{where}`{ENTRY}` must be a plain def, not async")
    a = fn.args
    if a.posonlyargs or a.vararg or a.kwarg:
        return fail("signature", "static.signature",
                    f"{where}`{ENTRY}` may not use positional-only (/), *args or **kwargs parameters")
    names = tuple(p.arg for p in a.args)
    if names[:5] != REQUIRED_PARAMS:
        return fail("signature", "static.signature",
                    f"{where}parameters are ({', '.join(names)}); expected (q, k, v, beta, chunk_size=32, ...)")
    first_default = len(a.args) - len(a.defaults)
    if first_default > 4:
        return fail("signature", "static.signature",
                    f"{where}chunk_size and every parameter after it need a default (chunk_size=32)")
    if first_default < 4:
        return fail("signature", "static.signature", f"{where}q, k, v and beta must not have defaults")
    default = a.defaults[0]
    if not (isinstance(default, ast.Constant) and type(default.value) is int and default.value == CHUNK_SIZE_DEFAULT):
        return fail("signature", "static.signature", f"{where}the default of chunk_size must be {CHUNK_SIZE_DEFAULT}")
    missing = [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is None]
    if missing:
        return fail("signature", "static.signature",
                    f"{where}keyword-only parameters need defaults: {', '.join(missing)}")
    return ok("signature")


def check_imports(tree: ast.Module) -> CheckResult:
    allowed = ", ".join(m for m in ALLOWED_IMPORTS if m != "__future__")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                return fail("imports", "static.import", f"line {node.lineno}: relative import is not allowed")
            modules = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] not in ALLOWED_IMPORTS:
                return fail("imports", "static.import",
                            f"line {node.lineno}: `import {module}` is not allowed; only {allowed}")
            bad = [p for p in parts[1:]
                   if p in FORBIDDEN_ATTRS or p in FORBIDDEN_MODULES or (p.startswith("_") and p != "*")]
            if bad and parts[0] != "__future__":
                return fail("imports", "static.import",
                            f"line {node.lineno}: `{module}` is not allowed "
                            f"(`{bad[0]}` reaches outside the tensor maths)")
    return ok("imports")


def literal_name(call: ast.Call) -> str | None:
    if len(call.args) >= 2 and isinstance(call.args[1], ast.Constant) and isinstance(call.args[1].value, str):
        return call.args[1].value
    return None


def check_names(tree: ast.Module) -> CheckResult:
    """Forbidden builtins, modules, torch escape hatches, dunders and private attributes."""
    getattr_calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr")}
    for node in ast.walk(tree):
        line = f"line {getattr(node, 'lineno', '?')}: "
        for name in identifiers(node):
            if dunder(name):
                return fail("names", "static.dunder",
                            f"{line}`{name}` is not allowed: candidates may not touch dunder names")
        if isinstance(node, ast.Name):
            if node.id in FORBIDDEN_BUILTINS:
                return fail("names", "static.forbidden_name",
                            f"{line}`{node.id}` is not allowed (file, process, code or frame access)")
            if node.id in ("getattr", "hasattr") and id(node) not in getattr_calls:
                return fail("names", "static.forbidden_name", f"{line}`{node.id}` may only be called directly")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if attr in FORBIDDEN_MODULES or attr in FORBIDDEN_ATTRS:
                return fail("names", "static.forbidden_name",
                            f"{line}`{dotted(node)}` is not allowed (`{attr}` reaches files, processes, "
                            "compiled code, hooks or global state)")
            if attr.startswith("_"):
                return fail("names", "static.forbidden_name",
                            f"{line}`{dotted(node)}` is not allowed: private attributes are off limits")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            name = literal_name(node)
            if name is None:
                return fail("names", "static.forbidden_name",
                            f"{line}`{node.func.id}` needs a literal attribute name")
            if name.startswith("_") or name in FORBIDDEN_MODULES or name in FORBIDDEN_ATTRS:
                reason = "static.dunder" if dunder(name) else "static.forbidden_name"
                return fail("names", reason, f"{line}`{node.func.id}(..., {name!r})` is not allowed")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            kind = "global" if isinstance(node, ast.Global) else "nonlocal"
            return fail("names", "static.module_mutation",
                        f"{line}`{kind} {', '.join(node.names)}` is not allowed: keep no state between calls")
    return ok("names")


def identifiers(node: ast.AST) -> list[str]:
    """Every identifier a node spells (names, attributes, defs, args, keywords, import aliases)."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, ast.keyword):
        return [node.arg] if node.arg else []
    if isinstance(node, ast.alias):
        return [n for n in (node.name.split(".") + [node.asname or ""]) if n]
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")
    if isinstance(node, ast.ExceptHandler):
        return [node.name] if node.name else []
    return []


def module_level_names(tree: ast.Module) -> set[str]:
    """Names bound at module level: imports, constants, helper functions."""
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name.split(".")[0]) for a in stmt.names)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def check_mutation(tree: ast.Module) -> CheckResult:
    """No attribute assignment at all, and no item assignment into a module-level object.

    Setting attributes is how modules are monkey-patched (torch.matmul = ..., F.cross_entropy = ...,
    or through an alias t = torch); a pure tensor function never needs it. Item assignment into a
    module-level object (a dict or list) would carry state between calls.
    """
    shared = module_level_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            targets = [node.target]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
        elif isinstance(node, ast.NamedExpr):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for sub in ast.walk(target):
                line = f"line {getattr(sub, 'lineno', node.lineno if hasattr(node, 'lineno') else '?')}: "
                if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                    return fail("mutation", "static.module_mutation",
                                f"{line}assignment to attribute `{dotted(sub)}` is not allowed (candidates may "
                                "not set attributes; compute new tensors, or use ctx.save_for_backward)")
                if isinstance(sub, ast.Subscript) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                    root = root_name(sub)
                    if root in shared:
                        return fail("mutation", "static.module_mutation",
                                    f"{line}item assignment into module-level `{root}` is not allowed "
                                    "(it would keep state between calls)")
    return ok("mutation")


class Canonicaliser(ast.NodeTransformer):
    """Renames every identifier the file binds to v0, v1, ... in order of first appearance."""

    def __init__(self, bound: set[str]):
        self.bound = bound
        self.names: dict[str, str] = {}

    def canon(self, name: str) -> str:
        if name not in self.bound:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        node.id = self.canon(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self.canon(node.arg)
        node.annotation = None
        node.type_comment = None
        return node

    def visit_FunctionDef(self, node):
        node.name = self.canon(node.name)
        node.returns = None
        node.type_comment = None
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        node.name = self.canon(node.name)
        self.generic_visit(node)
        return node

    def visit_alias(self, node):
        bound_as = node.asname or node.name.split(".")[0]
        node.asname = self.canon(bound_as)
        return node

    def visit_ExceptHandler(self, node):
        if node.name:
            node.name = self.canon(node.name)
        self.generic_visit(node)
        return node

    def visit_Global(self, node):
        node.names = [self.canon(n) for n in node.names]
        return node

    visit_Nonlocal = visit_Global


def bound_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names - {ENTRY, *REQUIRED_PARAMS}


def strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


def fingerprint(code: str) -> str:
    """sha256 of the normalised syntax tree: docstrings, comments, annotations and layout dropped,
    bound names canonicalised in order of appearance, constants and attribute names kept.

    Code that does not parse is fingerprinted by its whitespace-normalised text.
    """
    try:
        tree = parse(code)
    except SyntaxError:
        text = re.sub(r"\s+", " ", code).strip()
        return "text:" + hashlib.sha256(text.encode()).hexdigest()
    strip_docstrings(tree)
    tree = Canonicaliser(bound_names(tree)).visit(tree)
    dump = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return hashlib.sha256(dump.encode()).hexdigest()


def check_duplicate(code: str, earlier_fingerprints: Iterable[str] | Mapping[str, str] = ()) -> CheckResult:
    """Fails when the code's fingerprint is among the earlier ones; a mapping fingerprint -> label
    (e.g. "0007 delta_net_tanh_on_error") lets the message name the earlier candidate."""
    fp = fingerprint(code)
    earlier = earlier_fingerprints if isinstance(earlier_fingerprints, Mapping) else set(earlier_fingerprints)
    if fp in earlier:
        label = earlier[fp] if isinstance(earlier, Mapping) else ""
        which = f"candidate {label}" if label else "an earlier candidate"
        return fail("duplicate", "duplicate",
                    f"the code is the same as {which} up to names, comments and layout; change the computation")
    return ok("duplicate")


def check_static(code: str, earlier_fingerprints: Iterable[str] | Mapping[str, str] = ()) -> list[CheckResult]:
    """Run every static check in order (size, syntax, tree_size, imports, names, mutation, signature,
    duplicate) and stop after the first failure: the last result is then the failed one."""
    results: list[CheckResult] = []

    def run(check, *args) -> bool:
        t0 = time.perf_counter()
        result = check(*args)
        results.append(replace(result, seconds=time.perf_counter() - t0))
        return result.passed

    if not (run(check_size, code) and run(check_syntax, code)):
        return results
    tree = parse(code)
    for check in (check_nodes, check_imports, check_names, check_mutation, check_signature):
        if not run(check, tree):
            return results
    run(check_duplicate, code, earlier_fingerprints)
    return results


def first_failure(results: list[CheckResult]) -> CheckResult | None:
    return next((r for r in results if not r.passed), None)
