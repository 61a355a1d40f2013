"""The mutate proposer's catalogue: named, parameterised rewrites of a candidate's delta rule.

Each transformation inserts a few lines at a site found in the syntax tree of
`delta_rule_chunkwise` (the prologue on the raw inputs, after the delta, after the intra-chunk
attention, around the state update), keeps the rest of the file as written, and tags what it
inserts with a `# mutate: name(params)` comment line so that combining and re-applying stay safe.
A transformation whose site is missing in a parent is skipped; `undo` removes an intact tagged
block again. Tested by tests/test_mutate.py.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox.static_checks import ENTRY, ast_parse

FAMILIES = ("error", "state", "intra", "beta", "qk")
MARKER = re.compile(r"# mutate: ([a-z_0-9]+)\(")
EPS = "1e-6"


@dataclass(frozen=True)
class Statement:
    """One statement of the parent: where it is and how it reads."""
    line: int                 # first line, 1-based
    end: int                  # last line, 1-based
    indent: str
    text: str                 # the source, first line stripped


@dataclass(frozen=True)
class Anchors:
    """The sites of one delta rule; a name or statement is None where the parent has no such site."""
    entry: Statement          # first statement of the function body after the docstring
    state: str | None         # the name of the carried state (second element returned)
    state_update: Statement | None
    state_read_after: bool    # the loop reads the state after its update: a decay computed from the
                              # chunk's own delta could then reach that chunk's outputs
    error: str | None         # the per-chunk delta (pseudo-values corrected by the state)
    error_stmt: Statement | None
    attention: str | None     # the intra-chunk attention matrix multiplying the delta
    attention_stmt: Statement | None
    reads: dict[str, Statement] = field(default_factory=dict)  # first statement reading each input


def _statement(node: ast.stmt, lines: list[str]) -> Statement:
    first = lines[node.lineno - 1]
    return Statement(node.lineno, node.end_lineno or node.lineno, first[: len(first) - len(first.lstrip())],
                     first.strip())


def _names(node: ast.AST, ctx: type = ast.Load) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _assigns(stmt: ast.stmt, name: str) -> bool:
    if isinstance(stmt, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets)
    if isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        return isinstance(stmt.target, ast.Name) and stmt.target.id == name
    return False


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _written(update: ast.stmt, state: str) -> str | None:
    """The name whose outer product with the keys a state update adds (`S = S + k.T @ u` -> "u")."""
    return next((n.right.id for n in ast.walk(update.value) if isinstance(n, ast.BinOp)
                 and isinstance(n.op, ast.MatMult) and isinstance(n.right, ast.Name) and n.right.id != state), None)


def _entry_function(tree: ast.Module) -> ast.FunctionDef | None:
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == ENTRY), None)


def _returned_state(fn: ast.FunctionDef) -> str | None:
    returns = [n for n in ast.walk(fn) if isinstance(n, ast.Return) and isinstance(n.value, ast.Tuple)]
    if not returns or len(returns[-1].value.elts) != 2:
        return None
    second = returns[-1].value.elts[1]
    return second.id if isinstance(second, ast.Name) else None


def _unbound_source(fn: ast.FunctionDef, loop: ast.For, name: str) -> str:
    """The tensor whose per-chunk views `name` holds (`attns` in `qs, attns = (x.unbind(2) for x in (q, attn))`
    or `attns = attn.unbind(2)`), or `name` itself: transformations of the attention act on that tensor."""
    for stmt in fn.body:
        if stmt.lineno >= loop.lineno or not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            continue
        target, value = stmt.targets[0], stmt.value
        if isinstance(target, ast.Name) and target.id == name and isinstance(value, ast.Call) \
                and isinstance(value.func, ast.Attribute) and value.func.attr == "unbind":
            return _root(value.func.value) or name
        if isinstance(target, ast.Tuple) and isinstance(value, ast.GeneratorExp) \
                and isinstance(value.elt, ast.Call) and isinstance(value.elt.func, ast.Attribute) \
                and value.elt.func.attr == "unbind" and isinstance(value.generators[0].iter, ast.Tuple):
            names = [t.id if isinstance(t, ast.Name) else None for t in target.elts]
            sources = value.generators[0].iter.elts
            if name in names and len(sources) == len(names) and isinstance(sources[names.index(name)], ast.Name):
                return sources[names.index(name)].id
    return name


def locate(code: str) -> Anchors | None:
    """The sites of `delta_rule_chunkwise` in `code`, or None when it does not parse or has no such function."""
    try:
        tree = ast_parse(code)
    except SyntaxError:
        return None
    fn = _entry_function(tree)
    if fn is None:
        return None
    lines = code.splitlines()
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return None
    reads = {}
    for name in ("q", "k", "beta"):
        stmt = next((s for s in body if name in _names(s)), None)
        if stmt is not None:
            reads[name] = _statement(stmt, lines)
    state = _returned_state(fn)
    anchors = dict(entry=_statement(body[0], lines), state=state, state_update=None, state_read_after=False,
                   error=None, error_stmt=None, attention=None, attention_stmt=None, reads=reads)
    loop = None
    if state is not None:
        loops = [n for n in ast.walk(fn) if isinstance(n, ast.For) and any(_assigns(s, state) for s in n.body)]
        loop = loops[-1] if loops else None
    if loop is None:
        return Anchors(**anchors)
    updates = [i for i, s in enumerate(loop.body) if _assigns(s, state) and (
        isinstance(s, ast.AugAssign) or state in _names(s.value))]
    writes = [i for i in updates if _written(loop.body[i], state)]
    if not updates:
        return Anchors(**anchors)
    at = (writes or updates)[-1]
    update = loop.body[at]
    anchors["state_update"] = _statement(update, lines)
    anchors["state_read_after"] = any(state in _names(s) and not _assigns(s, state) for s in loop.body[at + 1:])
    error = _written(update, state)
    if error is None:
        return Anchors(**anchors)
    defs = [i for i, s in enumerate(loop.body[:at]) if _assigns(s, error)]
    if not defs or any(error in _names(s) for s in loop.body[:defs[-1]]):
        return Anchors(**anchors)
    anchors["error"] = error
    anchors["error_stmt"] = _statement(loop.body[defs[-1]], lines)
    uses = [n.left for s in loop.body[defs[-1] + 1:at] for n in ast.walk(s) if isinstance(n, ast.BinOp)
            and isinstance(n.op, ast.MatMult) and isinstance(n.right, ast.Name) and n.right.id == error]
    attention = _root(uses[0]) if uses else None
    if attention is None or attention == state:
        return Anchors(**anchors)
    attention = _unbound_source(fn, loop, attention)
    inside = [s for s in loop.body[defs[-1] + 1:at] if _assigns(s, attention)]
    outside = [s for s in fn.body if s.lineno < loop.lineno and _assigns(s, attention)]
    where = inside or outside
    if where:
        anchors["attention"] = attention
        anchors["attention_stmt"] = _statement(where[-1], lines)
    return Anchors(**anchors)


def applied(code: str) -> list[str]:
    """Names of the transformations already in `code`, from their `# mutate:` tags."""
    return list(dict.fromkeys(MARKER.findall(code)))


def label(name: str, params: dict[str, float | str]) -> str:
    """`tanh_on_error(scale=1.0)`: the form recorded in Candidate.mutations."""
    return f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"


def parse_label(text: str) -> tuple[str, str]:
    """(name, label) of a recorded mutation string."""
    return text.split("(", 1)[0].strip(), text.strip()


def _unit(x: str) -> str:
    return f"{x} = {x} / torch.sqrt({x}.pow(2).sum(-1, keepdim=True) + {EPS})"


def _inputs(which: str) -> tuple[str, ...]:
    return ("q", "k") if which == "qk" else ("k",)


# Each builder returns the lines to insert, given the anchors and one parameter setting.
Builder = Callable[[Anchors, dict], list[str]]

ERROR_MAPS: dict[str, Builder] = {
    "tanh_on_error": lambda a, p: [f"{a.error} = {p['scale']} * torch.tanh({a.error} / {p['scale']})"],
    "softsign_on_error": lambda a, p: [f"{a.error} = {a.error} / (1 + {a.error}.abs() / {p['scale']})"],
    "clip_error_rms": lambda a, p: [
        f"{a.error} = {a.error} * torch.clamp({p['max_rms']} / torch.sqrt({a.error}.pow(2).mean(-1, keepdim=True)"
        f" + {EPS}), max=1.0)"],
    "soft_rms_norm_error": lambda a, p: [
        f"{a.error} = {a.error} * torch.rsqrt(1 + {a.error}.pow(2).mean(-1, keepdim=True) / {p['gain']} ** 2)"],
}

STATE_MAPS: dict[str, Builder] = {
    "fixed_state_decay": lambda a, p: [f"{a.state} = {p['gamma']} * {a.state}"],
    "surprise_state_decay": lambda a, p: [
        f"{a.state} = {a.state} / (1 + {p['rate']} * {a.error}.pow(2).mean(dim=(-2, -1), keepdim=True))"],
    "state_norm_clip": lambda a, p: [
        f"{a.state} = {a.state} * torch.clamp({p['max_rms']} / torch.sqrt({a.state}.pow(2).mean(dim=(-2, -1),"
        f" keepdim=True) + {EPS}), max=1.0)"],
    "soft_state_norm": lambda a, p: [
        f"{a.state} = {a.state} * torch.rsqrt(1 + {a.state}.pow(2).mean(dim=(-2, -1), keepdim=True)"
        f" / {p['radius']} ** 2)"],
}

INTRA_MAPS: dict[str, Builder] = {
    "intra_chunk_softmax": lambda a, p: [
        f"softmax_upper = torch.ones({a.attention}.shape[-2], {a.attention}.shape[-1], dtype=torch.bool,"
        f" device={a.attention}.device).triu(1)",
        f"{a.attention} = torch.softmax(({a.attention} / {p['temperature']}).masked_fill(softmax_upper,"
        f" float('-inf')), dim=-1)"],
    "relu_kernel_intra_chunk": lambda a, p: [
        f"{a.attention} = {p['gain']} * torch.relu({a.attention}) ** {p['power']}"],
    "intra_chunk_diagonal_scale": lambda a, p: [
        f"{a.attention} = {a.attention} * (1 + ({p['factor']} - 1) * torch.eye({a.attention}.shape[-1],"
        f" dtype={a.attention}.dtype, device={a.attention}.device))"],
}

BETA_MAPS: dict[str, Builder] = {
    "beta_scale": lambda a, p: [f"beta = {p['factor']} * beta"],
    "beta_power": lambda a, p: [f"beta = beta.clamp_min({EPS}) ** {p['power']}"],
    "beta_floor": lambda a, p: [f"beta = {p['floor']} + (1 - {p['floor']}) * beta"],
    "beta_running_norm": lambda a, p: [
        "beta_running_mean = beta.cumsum(-1) / torch.arange(1, beta.shape[-1] + 1, dtype=beta.dtype,"
        " device=beta.device)",
        f"beta = torch.clamp(beta / (beta_running_mean + {EPS}), max={p['cap']})"],
}

QK_MAPS: dict[str, Builder] = {
    "elu_plus_one_qk": lambda a, p: [
        line for x in _inputs(p["inputs"]) for line in (f"{x} = torch.where({x} > 0, {x} + 1.0, torch.exp({x}))",
                                                         _unit(x))],
    "squared_relu_qk": lambda a, p: [
        line for x in _inputs(p["inputs"]) for line in (f"{x} = torch.relu({x}) ** 2", _unit(x))],
    "sharpen_qk": lambda a, p: [
        line for x in _inputs(p["inputs"]) for line in (f"{x} = torch.sign({x}) * {x}.abs() ** {p['power']}",
                                                         _unit(x))],
    "key_token_shift": lambda a, p: [
        "k_previous = torch.cat([torch.zeros_like(k[..., :1, :]), k[..., :-1, :]], dim=-2)",
        f"k = k + {p['mix']} * k_previous",
        _unit("k")],
}


@dataclass(frozen=True)
class Transformation:
    name: str
    family: str                                # one of FAMILIES
    slot: str                                  # at most one transformation per slot in one candidate
    site: str                                  # prologue | after_error | after_attention | before_update | after_update
    grid: tuple[dict[str, float | str], ...]   # parameter settings; the first is the default
    build: Builder
    prior: dict[str, float] = field(default_factory=dict)  # expected change of each task's score, before data
    new_names: tuple[str, ...] = ()            # names the inserted lines bind besides the site's own

    def target(self, anchors: Anchors) -> Statement | None:
        """The parent statement this transformation acts on; None where it does not apply."""
        if self.site == "prologue":
            return anchors.reads.get("beta" if self.family == "beta" else "k")
        if self.site == "after_error":
            return anchors.error_stmt
        if self.site == "after_attention":
            return anchors.attention_stmt
        if self.name == "surprise_state_decay" and (anchors.error_stmt is None or anchors.state_read_after):
            return None
        return anchors.state_update

    def applies(self, code: str, anchors: Anchors | None = None) -> bool:
        """True when the site exists, torch is imported, the slot is free and the new names are unused."""
        anchors = anchors or locate(code)
        if anchors is None or self.target(anchors) is None or not re.search(r"^import torch\b", code, re.M):
            return False
        taken = {BY_NAME[n].slot for n in applied(code) if n in BY_NAME}
        if self.slot in taken:
            return False
        return not any(re.search(rf"\b{n}\b", code) for n in self.new_names)

    def apply(self, code: str, params: dict[str, float | str]) -> str | None:
        """The code with this transformation inserted, or None when it does not apply."""
        anchors = locate(code)
        if anchors is None or not self.applies(code, anchors):
            return None
        lines = code.splitlines()
        tag = f"# mutate: {label(self.name, params)}"
        if self.site == "prologue":
            at, indent = anchors.entry.line - 1, anchors.entry.indent
        elif self.site == "after_error":
            at, indent = anchors.error_stmt.end, anchors.error_stmt.indent
        elif self.site == "after_attention":
            at, indent = anchors.attention_stmt.end, anchors.attention_stmt.indent
        elif self.site == "before_update":
            at, indent = anchors.state_update.line - 1, anchors.state_update.indent
        else:
            at, indent = anchors.state_update.end, anchors.state_update.indent
        inserted = [indent + line for line in (tag, *self.build(anchors, params))]
        out = "\n".join(lines[:at] + inserted + lines[at:])
        return out + "\n" if code.endswith("\n") else out


def _t(name, family, slot, site, grid, builders, prior=None, new_names=()):
    return Transformation(name, family, slot, site, tuple(grid), builders[name], prior or {}, tuple(new_names))


# Priors: expected changes per task before any data. The softmax prior is about half of what the
# earlier pipeline measured for a softmax-normalised intra-chunk attention (Memorize 0.338 -> 0.832,
# the other tasks 0.01 to 0.05 lower: reference/legacy-log-sample.txt; calibration.md measured the same
# Memorize gain at vocabulary 1024); the others are deliberately close to zero, so that measured
# outcomes dominate after one or two trials.
CATALOGUE: tuple[Transformation, ...] = (
    _t("tanh_on_error", "error", "error_map", "after_error",
       [{"scale": 1.0}, {"scale": 0.5}, {"scale": 2.0}], ERROR_MAPS,
       {"compress": 0.005, "fuzzy_recall": 0.01, "memorize": 0.005}),
    _t("softsign_on_error", "error", "error_map", "after_error",
       [{"scale": 1.0}, {"scale": 0.5}, {"scale": 2.0}], ERROR_MAPS, {"fuzzy_recall": 0.005}),
    _t("clip_error_rms", "error", "error_map", "after_error",
       [{"max_rms": 1.0}, {"max_rms": 2.0}, {"max_rms": 0.5}], ERROR_MAPS, {"fuzzy_recall": 0.005}),
    _t("soft_rms_norm_error", "error", "error_map", "after_error",
       [{"gain": 1.0}, {"gain": 0.5}, {"gain": 2.0}], ERROR_MAPS, {"fuzzy_recall": 0.005}),
    _t("fixed_state_decay", "state", "state_decay", "before_update",
       [{"gamma": 0.95}, {"gamma": 0.99}, {"gamma": 0.9}], STATE_MAPS,
       {"fuzzy_recall": 0.01, "compress": -0.005, "memorize": -0.005}),
    _t("surprise_state_decay", "state", "state_decay", "before_update",
       [{"rate": 1.0}, {"rate": 0.5}, {"rate": 4.0}], STATE_MAPS, {"fuzzy_recall": 0.01}),
    _t("state_norm_clip", "state", "state_norm", "after_update",
       [{"max_rms": 1.0}, {"max_rms": 0.5}, {"max_rms": 2.0}], STATE_MAPS, {"fuzzy_recall": 0.005}),
    _t("soft_state_norm", "state", "state_norm", "after_update",
       [{"radius": 1.0}, {"radius": 0.5}, {"radius": 2.0}], STATE_MAPS, {"fuzzy_recall": 0.005}),
    _t("intra_chunk_softmax", "intra", "intra_kernel", "after_attention",
       [{"temperature": 1.0}, {"temperature": 0.25}, {"temperature": 0.1}], INTRA_MAPS,
       {"memorize": 0.25, "fuzzy_recall": -0.03, "compress": -0.01, "context_recall": -0.005,
        "noisy_recall": -0.01, "selective_copy": -0.01}, ("softmax_upper",)),
    _t("relu_kernel_intra_chunk", "intra", "intra_kernel", "after_attention",
       [{"power": 1, "gain": 1.0}, {"power": 2, "gain": 1.0}, {"power": 2, "gain": 4.0}], INTRA_MAPS,
       {"memorize": 0.01}),
    _t("intra_chunk_diagonal_scale", "intra", "intra_diagonal", "after_attention",
       [{"factor": 0.5}, {"factor": 2.0}, {"factor": 0.0}], INTRA_MAPS, {}),
    _t("beta_scale", "beta", "beta_range", "prologue",
       [{"factor": 2.0}, {"factor": 1.5}], BETA_MAPS, {"fuzzy_recall": 0.01, "compress": 0.005}),
    _t("beta_power", "beta", "beta_shape", "prologue",
       [{"power": 0.5}, {"power": 2.0}], BETA_MAPS, {}),
    _t("beta_floor", "beta", "beta_shape", "prologue",
       [{"floor": 0.1}, {"floor": 0.25}], BETA_MAPS, {}),
    _t("beta_running_norm", "beta", "beta_range", "prologue",
       [{"cap": 2.0}, {"cap": 1.0}], BETA_MAPS, {}, ("beta_running_mean",)),
    _t("elu_plus_one_qk", "qk", "qk_map", "prologue",
       [{"inputs": "qk"}, {"inputs": "k"}], QK_MAPS, {}),
    _t("squared_relu_qk", "qk", "qk_map", "prologue",
       [{"inputs": "qk"}, {"inputs": "k"}], QK_MAPS, {}),
    _t("sharpen_qk", "qk", "qk_map", "prologue",
       [{"inputs": "qk", "power": 2.0}, {"inputs": "k", "power": 2.0}, {"inputs": "qk", "power": 3.0}], QK_MAPS, {}),
    _t("key_token_shift", "qk", "key_shift", "prologue",
       [{"mix": 0.5}, {"mix": 0.25}], QK_MAPS, {"memorize": 0.005}, ("k_previous",)),
)
BY_NAME: dict[str, Transformation] = {t.name: t for t in CATALOGUE}

TAG = re.compile(r"^\s*# mutate: ([a-z_0-9]+)\((.*)\)\s*$")


def _value(text: str) -> float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_params(inner: str) -> dict[str, float | str]:
    """The parameters of a label's inside: "scale=1.0, inputs=qk" -> {"scale": 1.0, "inputs": "qk"}."""
    pairs = [p.split("=", 1) for p in inner.split(",") if "=" in p]
    return {k.strip(): _value(v.strip()) for k, v in pairs}


class Removal:
    """`undo`: removes the lines one earlier transformation inserted (its tag and the statements that
    follow it, checked against a rebuild so that edited blocks are left alone), restoring that site."""
    name = "undo"
    family = "undo"
    slot = "undo"
    site = "tag"
    grid: tuple = ()
    prior: dict[str, float] = {}

    @staticmethod
    def blocks(code: str) -> dict[str, tuple[int, int]]:
        """name -> (first line index, line count) of each intact inserted block."""
        anchors = locate(code)
        if anchors is None:
            return {}
        lines = code.splitlines()
        out = {}
        for i, line in enumerate(lines):
            m = TAG.match(line)
            if not m or m.group(1) not in BY_NAME:
                continue
            expected = BY_NAME[m.group(1)].build(anchors, parse_params(m.group(2)))
            if [x.strip() for x in lines[i + 1:i + 1 + len(expected)]] == expected:
                out[m.group(1)] = (i, 1 + len(expected))
        return out

    def applies(self, code: str, anchors: Anchors | None = None) -> bool:
        return bool(self.blocks(code))

    def apply(self, code: str, params: dict[str, float | str]) -> str | None:
        block = self.blocks(code).get(str(params.get("name")))
        if block is None:
            return None
        start, count = block
        lines = code.splitlines()
        out = "\n".join(lines[:start] + lines[start + count:])
        return out + "\n" if code.endswith("\n") else out

    def target(self, code: str, params: dict[str, float | str]) -> Statement | None:
        block = self.blocks(code).get(str(params.get("name")))
        if block is None:
            return None
        line = code.splitlines()[block[0]]
        return Statement(block[0] + 1, block[0] + block[1], line[: len(line) - len(line.lstrip())], line.strip())


UNDO = Removal()
