"""Which change makes the training step cheaper: bf16, torch.compile, fused layers, a cheaper UT transform.

`python3 bench/bench_fuse.py [--variants plain,bf16,...] [--cores solve,indexed] [--configs LABEL,...]
[--profile] [--out fuse.json]` on a GPU machine (torch only). Every variant is a real GroupTrainer step
(forward, backward, per-member AdamW) on real data, captured in a CUDA graph and timed over replays with
device events; the compile time of the compiled variants is printed beside; `decomposed-norm` and `tap-conv`
put back the model layers sandbox/model.py had before it fused them; `nosplit` turns off the split-K weight
gradients of model.linear; `mixed` is the model's own bf16 mixed precision (layers under autocast, the
candidate in float32; `bf16` puts the candidate under autocast too); `eager` launches the plain step op by op
(no graph, host-timed), as the eager reference of bench_eval.py does. The model's layers are
sandbox/kernels.py's fused Triton kernels except in the variants named with `torch` (`torch`, `eager-torch`,
`torch+mixed`, ...) and the compiled and older-layer ones, which use the torch ops. It also times the
candidate's own forward + backward alone, and prints the top kernels of the plain graphed step, so the table
says where the time goes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import kernels, model as mad_model, tasks  # noqa: E402
from sandbox.train import Budget, Execution, GroupTrainer, Run  # noqa: E402

SOLVE = """    T = torch.linalg.solve_triangular(
        (eye + A).to(solve_dtype), eye.to(solve_dtype), upper=False, unitriangular=True
    ).to(A.dtype)"""
# (I + A)^-1 for a strictly lower triangular A (nilpotent, A^C = 0) as the product
# (I - A)(I + A^2)(I + A^4)...: log2(C) squarings, all batched matmuls.
PRODUCT = """    T = eye - A
    P = A
    for _ in range(max(C - 1, 1).bit_length() - 1):
        P = P @ P
        T = T + T @ P"""
UNBOUND_LOOP = """    # Per-chunk views. The backward of unbind is one stack, where indexing x[:, :, n] inside the
    # loop would write a full-size zero tensor per chunk (quadratic in the length).
    qs, ks, ws, us, attns = (x.unbind(2) for x in (q, k, w, u, attn))
    S = q.new_zeros(B, H, Dk, Dv)
    o = []
    for n in range(N):
        # The delta: pseudo-values minus what the state entering the chunk already predicts.
        u_n = us[n] - ws[n] @ S
        o.append(qs[n] @ S + attns[n] @ u_n)
        S = S + ks[n].transpose(-1, -2) @ u_n"""
INDEXED_LOOP = """    S = q.new_zeros(B, H, Dk, Dv)
    o = []
    for n in range(N):
        u_n = u[:, :, n] - w[:, :, n] @ S
        o.append(q[:, :, n] @ S + attn[:, :, n] @ u_n)
        S = S + k[:, :, n].transpose(-1, -2) @ u_n"""

STEPS = [  # (label, task, setting changes, members)
    ("CR L=128 G=16", "context_recall", {}, 16),
    ("CR L=1024 G=4", "context_recall", {"seq_len": 1024}, 4),
    ("Compress G=8", "compress", {}, 8),
    ("Memorize V=8192 G=6", "memorize", {"vocab_size": 8192}, 6),
    ("CR L=128 G=6", "context_recall", {}, 6),          # quick's groups (one seed)
    ("SC L=256 G=2", "selective_copy", {}, 2),
    ("Compress G=2", "compress", {}, 2),
    ("CR L=128 G=1", "context_recall", {}, 1),          # one run alone
]


# The model's layers as they were before sandbox/model.py adopted the fused forms (one elementwise kernel
# per operation), so that the bench can still measure what the fused forms buy.
def rms_norm_decomposed(x, w):
    w = w.view(w.shape[0], *([1] * (x.dim() - 2)), w.shape[-1])
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mad_model.NORM_EPS) * w


def l2_norm_decomposed(x):
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6)


def head_norm_decomposed(o, w, G):
    GB, H, L, D = o.shape
    o = o.view(G, GB // G, H, L, D)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + mad_model.NORM_EPS) * w[:, None, None, None, :]
    return o.view(GB, H, L, D)


def short_conv_taps(x, w):
    L, K = x.shape[2], w.shape[-1]
    xp = F.pad(x, (0, 0, K - 1, 0))
    y = xp[:, :, 0:L] * w[:, None, None, :, 0]
    for j in range(1, K):
        y = y + xp[:, :, j:j + L] * w[:, None, None, :, j]
    return F.silu(y)


LAYERS = {"decomposed-norm": {"rms_norm": rms_norm_decomposed, "l2_norm": l2_norm_decomposed,
                              "head_norm": head_norm_decomposed},
          "tap-conv": {"short_conv": short_conv_taps}}


def use_layers(variant: str) -> None:
    """Install the older model layers that `variant` names (and restore the model's own for the others)."""
    for name, table in LAYERS.items():
        for fn_name, fn in table.items():
            setattr(mad_model, fn_name, fn if name in variant else ORIGINAL[fn_name])


SPLIT_K_CTAS = mad_model.SPLIT_K_CTAS
TORCH_LAYERS = ("torch", "compile", "decomposed", "tap")   # variants whose layers are torch ops, not kernels.py's
ORIGINAL = {fn_name: getattr(mad_model, fn_name) for table in LAYERS.values() for fn_name in table}


def load(source: str, name: str):
    ns: dict = {}
    exec(compile(source, name, "exec"), ns)
    return ns["delta_rule_chunkwise"]


def free_core(q, k, v, beta, chunk_size=32):
    """Not a delta rule: one cheap elementwise map with a gradient to every input, so that a step with this
    core costs what the model around the candidate costs (the candidate's share is the difference)."""
    o = v * beta[..., None] + q * k
    return o, o.new_zeros(*o.shape[:2], q.shape[-1], v.shape[-1])


def cores(base: str) -> dict:
    """The candidate as written ("solve"), with the product-form UT transform, with an indexed loop, and
    "free" (free_core: the model without the candidate's cost)."""
    out = {"solve": load(base, "solve"), "free": free_core}
    if SOLVE in base:
        out["product"] = load(base.replace(SOLVE, PRODUCT), "product")
    if UNBOUND_LOOP in base:
        out["indexed"] = load(base.replace(UNBOUND_LOOP, INDEXED_LOOP), "indexed")
    return out


def check_core(fn, ref) -> float:
    g = torch.Generator(device="cuda").manual_seed(1)
    shape = (4, 4, 256, 32)
    q = F.normalize(torch.randn(shape, device="cuda", generator=g, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(shape, device="cuda", generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(shape, device="cuda", generator=g, dtype=torch.float64)
    beta = torch.rand(shape[:3], device="cuda", generator=g, dtype=torch.float64)
    o1, o2 = fn(q, k, v, beta, chunk_size=32)[0], ref(q, k, v, beta, chunk_size=32)[0]
    return float((o1 - o2).norm() / o2.norm())


def capture(fn, stream: torch.cuda.Stream | None = None) -> torch.cuda.CUDAGraph:
    """fn warmed up on a side stream, then captured (on `stream` when given) in a CUDA graph."""
    side = stream or torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        fn()
    return graph


def graph_ms(fn, reps: int) -> float:
    graph = capture(fn)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def eager_ms(fn, reps: int) -> float:
    """The step launched op by op (no graph), as the eager reference runs it."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000 / reps


def time_core(fn, L: int, reps: int) -> float:
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (128, 4, L, 32)
    q = F.normalize(torch.randn(shape, device="cuda", generator=g), dim=-1).requires_grad_()
    k = F.normalize(torch.randn(shape, device="cuda", generator=g), dim=-1).requires_grad_()
    v = torch.randn(shape, device="cuda", generator=g).requires_grad_()
    beta = torch.rand(shape[:3], device="cuda", generator=g).requires_grad_()

    def step():
        for t in (q, k, v, beta):
            t.grad = None
        o, S = fn(q, k, v, beta, chunk_size=32)
        (o.square().sum() + S.square().sum()).backward()

    return graph_ms(step, reps)


def trainer(task, changes, members, core) -> GroupTrainer:
    setting = tasks.baseline_setting(task)
    if changes:
        setting = setting.replace(**changes)
    runs = [Run(setting, seed, 1e-3, 0.0) for seed in range(members)]
    ex = Execution(device="cuda", batched=True, cuda_graphs=True)
    t = GroupTrainer(runs, "delta_net", core, Budget(valid_size=128, test_size=128), torch.device("cuda"),
                     ex, log=lambda s: None)
    x, y = t.train
    t.x_buf.copy_(x[:, :128])
    t.y_buf.copy_(y[:, :128])
    return t


def variant_body(t: GroupTrainer, variant: str):
    """The train step of `variant` over trainer t; returns (body, compile seconds)."""
    model = t.model
    kernels.set_enabled(not any(word in variant for word in TORCH_LAYERS))
    mad_model.SPLIT_K_CTAS = 0 if "nosplit" in variant else SPLIT_K_CTAS
    model.bf16 = "mixed" in variant
    losses = model.losses
    if "compile" in variant:
        if "nocore" in variant:
            model.core = torch._dynamo.disable(model.core)
        losses = torch.compile(model.losses, dynamic=False)
    if "bf16" in variant:
        inner = losses

        def losses(x, y):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return inner(x, y).float()

    def body():
        model.bank.grad.zero_()
        ls = losses(t.x_buf, t.y_buf)
        ls.sum().backward()
        t.loss_acc += ls.detach()
        t.opt.step()

    use_layers(variant)
    t0 = time.monotonic()
    if "compile" in variant:
        body()
        torch.cuda.synchronize()
    return body, time.monotonic() - t0


def profile_top(body, rows: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile
    for _ in range(2):
        body()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        body()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", default="sandbox/naive.py")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--variants", default="plain,bf16,compile,compile-nocore,compile+bf16")
    ap.add_argument("--cores", default="solve", help="solve, product, indexed, free: which cores the steps use")
    ap.add_argument("--core-variants", default="plain,compile,bf16",
                    help="the variants also timed with the other UT transforms")
    ap.add_argument("--configs", default=",".join(s[0] for s in STEPS))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_float32_matmul_precision("high")
    source = Path(args.candidate).read_text()
    core_fns = cores(source)
    rows: list[dict] = []

    print("core alone, fwd+bwd, B=128 H=4 D=32, graphed:")
    for name, fn in core_fns.items():
        if fn is free_core:
            continue
        err = check_core(fn, core_fns["solve"])
        for L in (128, 1024):
            ms = time_core(fn, L, 20)
            rows.append({"kind": "core", "core": name, "L": L, "ms": ms, "rel_err_fp64": err})
            print(f"  {name:16} L={L:5d} {ms:8.2f} ms  (vs solve in fp64: {err:.1e})", flush=True)

    wanted = set(args.configs.split(","))
    for label, task, changes, members in STEPS:
        if label not in wanted:
            continue
        for core_name in args.cores.split(","):
            if core_name not in core_fns:
                continue
            for variant in args.variants.split(","):
                if core_name != "solve" and variant not in args.core_variants.split(","):
                    continue
                torch._dynamo.reset()
                t = trainer(task, changes, members, core_fns[core_name])
                try:
                    body, compile_s = variant_body(t, variant)
                    if args.profile and variant == "plain" and core_name in ("solve", "free"):
                        print(profile_top(body), flush=True)
                    ms = eager_ms(body, args.steps) if variant == "eager" else graph_ms(body, args.steps)
                    row = {"kind": "step", "config": label, "core": core_name, "variant": variant,
                           "ms_step": ms, "ms_member": ms / members, "compile_s": compile_s}
                except Exception as err:  # a variant that cannot run is a row, not the end of the bench
                    row = {"kind": "step", "config": label, "core": core_name, "variant": variant,
                           "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
                rows.append(row)
                print(json.dumps(row), flush=True)
                del t
                torch.cuda.empty_cache()
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"\n{'config':22} {'core':8} {'variant':16} {'ms/step':>8} {'ms/member':>9} {'compile s':>9}")
    for r in rows:
        if r["kind"] != "step":
            continue
        if "error" in r:
            print(f"{r['config']:22} {r['core']:8} {r['variant']:16} {r['error'][:60]}")
            continue
        print(f"{r['config']:22} {r['core']:8} {r['variant']:16} {r['ms_step']:8.2f} {r['ms_member']:9.2f} "
              f"{r['compile_s']:9.1f}")


if __name__ == "__main__":
    main()
