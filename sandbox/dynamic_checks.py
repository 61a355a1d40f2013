"""Dynamic checks of a candidate's delta_rule_chunkwise, run in the worker before any training.

Each check is a function (fn, device) that raises CandidateFailed(reason, message); `run_check` turns
it into a CheckFinding dict (sandbox/result.py) and `run_dynamic_checks` stops at the first failure.
Out-of-memory errors are re-raised as MemoryError naming the check and the candidate's line, for the
worker to report as status "oom". Tested by tests/test_dynamic_checks.py and tests/test_corpus.py.
"""
from __future__ import annotations

import math
import time
import traceback

import torch
import torch.nn.functional as F

from sandbox.guard import SandboxViolation

CHUNK = 32
CAUSAL_CUTS = (1, 17, 31, 32, 33, 63)
COST_LENGTHS = (256, 1024)   # 4x apart: linear cost grows ~4x, quadratic ~16x
COST_LIMIT = 7.0             # the largest growth of memory (saved for backward; CUDA peak) accepted at 4L
TIME_LIMIT = 12.0            # run-time growth (median of 3, re-measured once before failing), judged
                             # only when the 4L call is slow enough to time
TIME_FLOOR_S = 0.05
OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, CUDA out-of-memory, or torch's CPU allocator failing (a RuntimeError)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in OOM_MESSAGES)


class CandidateFailed(Exception):
    """A check's verdict: reason code and one-line message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def inputs(B, H, L, Dk, Dv, device, seed=0, dtype=torch.float32, grad=False):
    """q, k L2-normalised [B,H,L,Dk]; v [B,H,L,Dv]; beta in (0, 1) [B,H,L], from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, H, L, Dk, generator=g, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(B, H, L, Dk, generator=g, dtype=dtype), dim=-1)
    v = torch.randn(B, H, L, Dv, generator=g, dtype=dtype)
    beta = torch.sigmoid(torch.randn(B, H, L, generator=g, dtype=dtype))
    return [t.to(device).requires_grad_(grad) for t in (q, k, v, beta)]


def call(fn, q, k, v, beta, chunk_size=CHUNK):
    """Run the candidate and insist on a pair of tensors (o, S)."""
    out = fn(q, k, v, beta, chunk_size=chunk_size)
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise CandidateFailed("shapes", f"must return a pair of tensors (o, S); got {describe(out)}")
    return out


def describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"one tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}: " + ", ".join(
            f"tensor{tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__ for t in out)
    return type(out).__name__


def check_shapes(fn, device):
    B, H, L, Dk, Dv = 2, 2, 64, 16, 8
    q, k, v, beta = inputs(B, H, L, Dk, Dv, device)
    o, S = call(fn, q, k, v, beta)
    if tuple(o.shape) != (B, H, L, Dv):
        raise CandidateFailed("shapes", f"o has shape {tuple(o.shape)}; expected [B, H, L, Dv] = {(B, H, L, Dv)}")
    if tuple(S.shape) != (B, H, Dk, Dv):
        raise CandidateFailed("shapes", f"S has shape {tuple(S.shape)}; expected [B, H, Dk, Dv] = {(B, H, Dk, Dv)}")
    if o.dtype != v.dtype or not S.dtype.is_floating_point:
        raise CandidateFailed("shapes", f"o is {o.dtype} and S is {S.dtype}; o must have the dtype of v ({v.dtype})")
    if o.device != v.device or S.device != v.device:
        raise CandidateFailed("shapes", f"outputs are on {o.device}/{S.device}; inputs on {v.device}")


def check_finite(fn, device):
    o, S = call(fn, *inputs(2, 2, 64, 16, 8, device, seed=1))
    for name, t in (("o", o), ("S", S)):
        if not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).sum().item()
            raise CandidateFailed("finite", f"{name} has {bad} non-finite values (NaN or inf) on random inputs")


def check_gradients(fn, device):
    q, k, v, beta = inputs(2, 2, 64, 16, 8, device, seed=2, grad=True)
    o, S = call(fn, q, k, v, beta)
    g = torch.Generator().manual_seed(3)
    weight_o = torch.randn(o.shape, generator=g).to(device, o.dtype)
    weight_s = torch.randn(S.shape, generator=g).to(device, S.dtype)
    if not (o.requires_grad or S.requires_grad):
        raise CandidateFailed("gradients", "o and S carry no gradient: the computation is detached from the inputs")
    ((o * weight_o).sum() + (S * weight_s).sum()).backward()
    for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        if t.grad is None or not t.grad.abs().sum().item() > 0:
            raise CandidateFailed("gradients", f"no gradient reaches {name} (is it detached or unused?)")
        if not torch.isfinite(t.grad).all():
            raise CandidateFailed("gradients", f"the gradient of {name} is not finite")


def tolerance(reference: torch.Tensor) -> float:
    return 1e-5 * (1.0 + reference.detach().abs().max().item())


@torch.no_grad()
def check_causality(fn, device):
    B, H, L = 2, 2, 64
    base = inputs(B, H, L, 16, 8, device, seed=4)
    other = inputs(B, H, L, 16, 8, device, seed=5)
    o_base, _ = call(fn, *base)
    for t in CAUSAL_CUTS:
        changed = [torch.cat([a[:, :, :t], b[:, :, t:]], dim=2) for a, b in zip(base, other)]
        o, _ = call(fn, *changed)
        diff = (o[:, :, :t] - o_base[:, :, :t]).abs()
        if not diff.max().item() <= tolerance(o_base):
            first = int(diff.amax(dim=(0, 1, 3)).gt(tolerance(o_base)).nonzero()[0])
            raise CandidateFailed("causality",
                                  f"changing inputs at positions >= {t} changed the output at position {first} "
                                  f"(by {diff.max().item():.3g}; chunk size {CHUNK}): the output reads the future")


@torch.no_grad()
def check_batch_independence(fn, device):
    base = inputs(3, 2, 64, 16, 8, device, seed=6)
    other = inputs(3, 2, 64, 16, 8, device, seed=7)
    o_base, s_base = call(fn, *base)
    changed = [torch.cat([a[:1], b[1:2], a[2:]]) for a, b in zip(base, other)]
    o, s = call(fn, *changed)
    for name, new, old in (("o", o, o_base), ("S", s, s_base)):
        diff = max((new[i] - old[i]).abs().max().item() for i in (0, 2))
        if not diff <= tolerance(old):
            raise CandidateFailed("batch_independence",
                                  f"changing sample 1 of the batch changed {name} of samples 0 and 2 (by {diff:.3g})")


def saved_bytes(fn, q, k, v, beta) -> int:
    """Bytes of the distinct storages autograd saves for backward: deterministic on any device,
    and 16x at 4L when a candidate keeps an L x L matrix (or L x L worth of tiles) for backward."""
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = call(fn, q, k, v, beta)
    del out
    return sum(storages.values())


def measure(fn, L, device) -> dict:
    q, k, v, beta = inputs(1, 1, L, 16, 16, device, seed=8, grad=True)
    cuda = device.startswith("cuda")
    stats = {"saved_bytes": saved_bytes(fn, q, k, v, beta)}
    times = []
    # CPU: this process's CPU time, which other processes' load does not inflate (wall time did, x20-50
    # on a busy 2-core machine); CUDA: wall time around synchronised launches
    clock = time.perf_counter if cuda else time.process_time
    with torch.no_grad():
        for _ in range(3):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            t0 = clock()
            call(fn, q, k, v, beta)
            if cuda:
                torch.cuda.synchronize()
                stats["peak_bytes"] = torch.cuda.max_memory_allocated() - before
            times.append(clock() - t0)
    stats["seconds"] = sorted(times)[1]
    return stats


def check_cost(fn, device):
    small, large = (measure(fn, L, device) for L in COST_LENGTHS)
    ratio = {key: large[key] / max(small[key], 1) for key in ("saved_bytes", "peak_bytes") if key in small}
    labels = {"saved_bytes": "memory saved for backward", "peak_bytes": "peak memory"}
    growth = ", ".join(f"{labels[key]} x{value:.1f}" for key, value in ratio.items())
    lengths = f"L={COST_LENGTHS[0]} to {COST_LENGTHS[1]}"
    if any(value > COST_LIMIT for value in ratio.values()):
        raise CandidateFailed("cost", f"cost grows quadratically from {lengths} ({growth}; linear is about x4, "
                                      "quadratic x16): do not materialise L x L matrices")
    time_ratio = large["seconds"] / max(small["seconds"], 1e-9)
    if large["seconds"] > TIME_FLOOR_S and time_ratio > TIME_LIMIT:
        again = [measure(fn, L, device) for L in COST_LENGTHS]
        if again[1]["seconds"] / max(again[0]["seconds"], 1e-9) < time_ratio:
            small, large = again
            time_ratio = large["seconds"] / max(small["seconds"], 1e-9)
    if large["seconds"] > TIME_FLOOR_S and time_ratio > TIME_LIMIT:
        raise CandidateFailed("cost", f"run time grows x{time_ratio:.1f} from {lengths} "
                                      f"({small['seconds'] * 1e3:.1f} ms to {large['seconds'] * 1e3:.1f} ms): "
                                      "super-linear in the sequence length")


@torch.no_grad()
def check_determinism(fn, device):
    args = inputs(2, 2, 64, 16, 8, device, seed=9)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        outs.append(call(fn, *(a.clone() for a in args)))
    for name, a, b in zip(("o", "S"), outs[0], outs[1]):
        if not torch.allclose(a, b, rtol=1e-6, atol=1e-7, equal_nan=True):
            raise CandidateFailed("determinism", f"two calls with the same inputs and seed gave different {name} "
                                                 f"(by {(a - b).abs().max().item():.3g}): keep no state between calls")


def adam_step(params: dict, moments: dict, step: int, lr: float, betas=(0.9, 0.999), eps=1e-8) -> None:
    """Plain Adam, written out: torch.optim's first use imports torch._dynamo (seconds per worker)."""
    with torch.no_grad():
        for name, p in params.items():
            m, v = moments.setdefault(name, (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(betas[0]).add_(p.grad, alpha=1 - betas[0])
            v.mul_(betas[1]).addcmul_(p.grad, p.grad, value=1 - betas[1])
            denom = (v / (1 - betas[1] ** step)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - betas[0] ** step))
            p.grad = None


def check_trains(fn, device, steps: int = 40):
    """A small layer around the candidate learns a causal running mean: the loss must fall by 30%."""
    g = torch.Generator().manual_seed(10)
    B, L, D, H = 8, 64, 16, 2
    x = torch.randn(B, L, D, generator=g).to(device)
    target = torch.cumsum(x @ torch.randn(D, D, generator=g).to(device), dim=1)
    target = target / torch.arange(1, L + 1, device=device)[:, None]
    params = {name: (torch.randn(D, D, generator=g) / math.sqrt(D)).to(device).requires_grad_()
              for name in ("q", "k", "v", "o")}
    params["beta"] = (torch.randn(D, H, generator=g) / math.sqrt(D)).to(device).requires_grad_()
    moments: dict = {}

    def heads(t):
        return t.view(B, L, H, D // H).transpose(1, 2)

    losses = []
    for step in range(1, steps + 1):
        q = F.normalize(heads(x @ params["q"]), dim=-1)
        k = F.normalize(heads(x @ params["k"]), dim=-1)
        beta = torch.sigmoid(x @ params["beta"]).transpose(1, 2)
        o, _ = call(fn, q, k, heads(x @ params["v"]), beta)
        loss = F.mse_loss(o.transpose(1, 2).reshape(B, L, D) @ params["o"], target)
        if not torch.isfinite(loss):
            raise CandidateFailed("trains", f"the training loss became {loss.item()} after {len(losses)} steps")
        loss.backward()
        if any(p.grad is None for p in params.values()):
            raise CandidateFailed("trains", "a projection feeding the candidate received no gradient")
        adam_step(params, moments, step, lr=3e-2)
        losses.append(loss.item())
    start, end = losses[0], sum(losses[-5:]) / 5
    if not end < 0.7 * start:
        raise CandidateFailed("trains", f"a small layer built on the candidate did not learn a running mean in "
                                        f"{steps} steps (loss {start:.3f} -> {end:.3f})")


CHECKS = (check_shapes, check_finite, check_determinism, check_gradients, check_causality,
          check_batch_independence, check_cost, check_trains)


def candidate_line(error: BaseException, filename: str) -> str:
    """Where in the candidate's file the error came from, for the repair message."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    return f" (candidate line {frames[-1].lineno}: `{(frames[-1].line or '').strip()[:80]}`)" if frames else ""


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


def run_check(check, fn, device: str) -> dict:
    name = check.__name__.removeprefix("check_")
    filename = getattr(getattr(fn, "__code__", None), "co_filename", "")
    t0 = time.perf_counter()
    try:
        check(fn, device)
        reason, message = "", ""
    except CandidateFailed as e:
        reason, message = e.reason, str(e)
    except SandboxViolation as e:
        reason = "sandbox_violation"
        message = f"{name}: the candidate was stopped: {first_line(e)}{candidate_line(e, filename)}"
    except Exception as e:
        first = first_line(e)
        if is_out_of_memory(e):
            raise MemoryError(f"{name}: the candidate ran out of memory ({type(e).__name__}: {first})"
                              f"{candidate_line(e, filename)}") from e
        reason = "exception"
        message = f"{name}: the candidate raised {type(e).__name__}: {first}{candidate_line(e, filename)}"
    return {"name": name, "passed": not reason, "reason": reason, "message": message,
            "seconds": time.perf_counter() - t0}


def run_dynamic_checks(fn, device: str) -> list[dict]:
    """Return CheckFinding dicts (sandbox/result.py); stops after the first that failed."""
    findings = []
    for check in CHECKS:
        findings.append(run_check(check, fn, device))
        if not findings[-1]["passed"]:
            break
    return findings
