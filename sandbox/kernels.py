"""Fused Triton kernels for the model's own layers (never the candidate's), forward and backward.

Four autograd Functions: the per-member RMSNorm, SwiGLU's gate, DeltaNet's short convolution written
straight into head layout (SiLU, L2-normalised q and k, beta, chunk padding), and its per-head output
RMSNorm read from head layout. Each replaces a chain of torch kernels and layout copies. The model
uses them for CUDA tensors when triton imports, and its torch ops otherwise (CPU, no triton,
ARCHER_KERNELS=0). After `freeze()` (the worker calls it before its guard forbids compiler
subprocesses) only the variants compiled by `warm` are launched; integer arguments are never
specialised, so one compile serves every shape. Tested by tests/test_kernels.py (triton's
interpreter on CPU, and on a GPU) against the torch ops in sandbox/model.py.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:           # CPU installs: the model keeps its torch ops
    triton = None

MAX_ELEMENTS = 2 ** 31 - 1    # int32 offsets inside the kernels
_state = {"enabled": os.environ.get("ARCHER_KERNELS", "1") != "0", "frozen": False, "warm": set()}


def set_enabled(flag: bool) -> None:
    _state["enabled"] = bool(flag)


def enabled() -> bool:
    return triton is not None and _state["enabled"]


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def usable(kind: str, *tensors: torch.Tensor) -> bool:
    """Whether the kernel `kind` runs on these tensors: CUDA (or triton's CPU interpreter), a compiled
    variant for their dtype once frozen, and offsets that fit in int32."""
    if not enabled() or not all(t.is_cuda or interpreting() for t in tensors):
        return False
    if any(t.numel() > MAX_ELEMENTS for t in tensors):
        return False
    if _state["frozen"]:
        return all((kind, t.dtype) in _state["warm"] for t in tensors if t.is_floating_point())
    return True


def freeze() -> None:
    """From now on launch only the variants `warm` compiled (no compiler may start after the guard)."""
    _state["frozen"] = True


def _aligned(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


if triton is not None:
    @triton.jit
    def _rms_block(X, R, C: tl.constexpr, BR: tl.constexpr):
        """This program's member g, its BR rows (mask m), their offsets in [G, R, C] and x there, as float32."""
        g, blk = tl.program_id(0), tl.program_id(1)
        rows = blk * BR + tl.arange(0, BR)
        cols = tl.arange(0, C)
        m = rows < R
        off = (g * R + rows)[:, None] * C + cols[None, :]
        return g, rows, cols, m, off, tl.load(X + off, mask=m[:, None], other=0.0).to(tl.float32)

    @triton.jit(do_not_specialize=["R"])
    def _rms_fwd(X, W, Y, RSTD, R, eps, C: tl.constexpr, BR: tl.constexpr):
        g, rows, cols, m, off, x = _rms_block(X, R, C, BR)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, 1) / C + eps)
        w = tl.load(W + g * C + cols).to(tl.float32)
        tl.store(Y + off, (x * rstd[:, None] * w[None, :]).to(Y.dtype.element_ty), mask=m[:, None])
        tl.store(RSTD + g * R + rows, rstd, mask=m)

    @triton.jit(do_not_specialize=["R"])
    def _rms_bwd(X, W, DY, RSTD, DX, DWP, R, C: tl.constexpr, BR: tl.constexpr):
        g, rows, cols, m, off, x = _rms_block(X, R, C, BR)
        dy = tl.load(DY + off, mask=m[:, None], other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + g * R + rows, mask=m, other=0.0)
        w = tl.load(W + g * C + cols).to(tl.float32)
        xhat = x * rstd[:, None]
        dyw = dy * w[None, :]
        dx = (dyw - xhat * (tl.sum(dyw * xhat, 1) / C)[:, None]) * rstd[:, None]
        tl.store(DX + off, dx.to(DX.dtype.element_ty), mask=m[:, None])
        tl.store(DWP + (g * tl.num_programs(1) + tl.program_id(1)) * C + cols, tl.sum(dy * xhat, 0))

    @triton.jit(do_not_specialize=["N"])
    def _swiglu_fwd(H, Y, N, I: tl.constexpr, BLOCK: tl.constexpr):
        idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = idx < N * I
        row, col = idx // I, idx % I
        a = tl.load(H + row * (2 * I) + col, mask=m, other=0.0).to(tl.float32)
        b = tl.load(H + row * (2 * I) + I + col, mask=m, other=0.0).to(tl.float32)
        tl.store(Y + idx, (a * tl.sigmoid(a) * b).to(Y.dtype.element_ty), mask=m)

    @triton.jit(do_not_specialize=["N"])
    def _swiglu_bwd(H, DY, DH, N, I: tl.constexpr, BLOCK: tl.constexpr):
        idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = idx < N * I
        row, col = idx // I, idx % I
        a = tl.load(H + row * (2 * I) + col, mask=m, other=0.0).to(tl.float32)
        b = tl.load(H + row * (2 * I) + I + col, mask=m, other=0.0).to(tl.float32)
        dy = tl.load(DY + idx, mask=m, other=0.0).to(tl.float32)
        s = tl.sigmoid(a)
        tl.store(DH + row * (2 * I) + col, (dy * b * s * (1 + a * (1 - s))).to(DH.dtype.element_ty), mask=m)
        tl.store(DH + row * (2 * I) + I + col, (dy * a * s).to(DH.dtype.element_ty), mask=m)

    @triton.jit
    def _tap(base, pos, L, CIN: tl.constexpr, cols):
        """x[pos, cols] of one sequence row in [L, CIN] layout, zero outside 0 <= pos < L."""
        ok = (pos >= 0) & (pos < L)
        return tl.load(base + pos[:, None] * CIN + cols[None, :], mask=ok[:, None], other=0.0).to(tl.float32)

    @triton.jit
    def _silu_norm_grad(y, dn, norm):
        """d(loss)/dy from d(loss)/d(output), output = l2norm(silu(y)) (norm) or silu(y)."""
        sg = tl.sigmoid(y)
        s = y * sg
        ds = dn
        if norm:
            rs = 1.0 / tl.sqrt(tl.sum(s * s, 1) + 1e-6)
            n = s * rs[:, None]
            ds = (dn - n * tl.sum(dn * n, 1)[:, None]) * rs[:, None]
        return ds * sg * (1 + y * (1 - sg))

    @triton.jit
    def _conv_weights(wrow):
        """The 4 taps of the D channels whose rows of the [C, 4] weight start at wrow, each [1, D]."""
        return (tl.load(wrow + 0)[None, :], tl.load(wrow + 1)[None, :], tl.load(wrow + 2)[None, :],
                tl.load(wrow + 3)[None, :])

    @triton.jit
    def _conv_program(Wc, B, part, HEADS: tl.constexpr, D: tl.constexpr):
        """This program's batch row r (= member * B + row) and head, the first channel c0 of its part (q, k
        or v) and head, the D channel offsets, and the convolution's 4 taps for those channels."""
        r, head = tl.program_id(0), tl.program_id(1)
        c0 = part * HEADS * D + head * D
        cols = tl.arange(0, D)
        w0, w1, w2, w3 = _conv_weights(Wc + ((r // B) * 3 * HEADS * D + c0 + cols) * 4)
        return r, head, c0, cols, w0, w1, w2, w3

    @triton.jit(do_not_specialize=["B", "L", "LP", "part"])
    def _conv_fwd(Hin, Wc, OUT, BETA, B, L, LP, part, HEADS: tl.constexpr, D: tl.constexpr, BL: tl.constexpr):
        r, head, c0, cols, w0, w1, w2, w3 = _conv_program(Wc, B, part, HEADS, D)
        DM: tl.constexpr = HEADS * D
        CIN: tl.constexpr = 3 * DM + HEADS
        base = Hin + r * L * CIN + c0
        orow = (r * HEADS + head) * LP
        for l0 in tl.range(0, LP, BL):
            pos = l0 + tl.arange(0, BL)
            y = (w0 * _tap(base, pos - 3, L, CIN, cols) + w1 * _tap(base, pos - 2, L, CIN, cols)
                 + w2 * _tap(base, pos - 1, L, CIN, cols) + w3 * _tap(base, pos, L, CIN, cols))
            s = y * tl.sigmoid(y)
            if part < 2:                                        # q and k: L2-normalised over D
                s = s / tl.sqrt(tl.sum(s * s, 1) + 1e-6)[:, None]
            s = tl.where((pos < L)[:, None], s, 0.0)
            tl.store(OUT + (orow + pos)[:, None] * D + cols[None, :], s, mask=(pos < LP)[:, None])
            if part == 0:
                logit = tl.load(Hin + (r * L + pos) * CIN + 3 * DM + head, mask=pos < L, other=0.0)
                beta = tl.where(pos < L, tl.sigmoid(logit.to(tl.float32)), 0.0)
                tl.store(BETA + orow + pos, beta, mask=pos < LP)

    @triton.jit(do_not_specialize=["B", "L", "LP", "part"])
    def _conv_bwd_dy(Hin, Wc, DOUT, DBETA, DY, DH, DWP, B, L, LP, part, HEADS: tl.constexpr, D: tl.constexpr,
                     BL: tl.constexpr):
        """The convolution's output gradient dy (before SiLU and the norm) into DY, the weight gradient's
        per-row partial sums into DWP, and beta's logit gradient into DH."""
        r, head, c0, cols, w0, w1, w2, w3 = _conv_program(Wc, B, part, HEADS, D)
        DM: tl.constexpr = HEADS * D
        CIN: tl.constexpr = 3 * DM + HEADS
        norm = part < 2
        base = Hin + r * L * CIN + c0
        orow = (r * HEADS + head) * LP
        dw0 = tl.zeros([D], tl.float32)
        dw1 = tl.zeros([D], tl.float32)
        dw2 = tl.zeros([D], tl.float32)
        dw3 = tl.zeros([D], tl.float32)
        for l0 in tl.range(0, L, BL):
            pos = l0 + tl.arange(0, BL)
            m = pos < L
            xm3 = _tap(base, pos - 3, L, CIN, cols)
            xm2 = _tap(base, pos - 2, L, CIN, cols)
            xm1 = _tap(base, pos - 1, L, CIN, cols)
            x0 = _tap(base, pos, L, CIN, cols)
            dy = _silu_norm_grad(w0 * xm3 + w1 * xm2 + w2 * xm1 + w3 * x0, _tap(DOUT + orow * D, pos, L, D, cols),
                                 norm)
            tl.store(DY + (orow + pos)[:, None] * D + cols[None, :], dy, mask=m[:, None])
            dw0 += tl.sum(dy * xm3, 0)
            dw1 += tl.sum(dy * xm2, 0)
            dw2 += tl.sum(dy * xm1, 0)
            dw3 += tl.sum(dy * x0, 0)
            if part == 0:
                logit = tl.load(Hin + (r * L + pos) * CIN + 3 * DM + head, mask=m, other=0.0).to(tl.float32)
                db = tl.load(DBETA + orow + pos, mask=m, other=0.0)
                sb = tl.sigmoid(logit)
                tl.store(DH + (r * L + pos) * CIN + 3 * DM + head, (db * sb * (1 - sb)).to(DH.dtype.element_ty),
                         mask=m)
        prow = DWP + (r * 3 * DM + c0 + cols) * 4
        tl.store(prow + 0, dw0)
        tl.store(prow + 1, dw1)
        tl.store(prow + 2, dw2)
        tl.store(prow + 3, dw3)

    @triton.jit(do_not_specialize=["B", "L", "LP", "part"])
    def _conv_bwd_dx(Wc, DY, DH, B, L, LP, part, HEADS: tl.constexpr, D: tl.constexpr, BL: tl.constexpr):
        """The convolution's input gradient: dx[p] = w3 dy[p] + w2 dy[p+1] + w1 dy[p+2] + w0 dy[p+3]."""
        r, head, c0, cols, w0, w1, w2, w3 = _conv_program(Wc, B, part, HEADS, D)
        CIN: tl.constexpr = 3 * HEADS * D + HEADS
        dyrow = DY + (r * HEADS + head) * LP * D
        for l0 in tl.range(0, L, BL):
            pos = l0 + tl.arange(0, BL)
            dx = (w3 * _tap(dyrow, pos, L, D, cols) + w2 * _tap(dyrow, pos + 1, L, D, cols)
                  + w1 * _tap(dyrow, pos + 2, L, D, cols) + w0 * _tap(dyrow, pos + 3, L, D, cols))
            tl.store(DH + (r * L + pos)[:, None] * CIN + c0 + cols[None, :], dx.to(DH.dtype.element_ty),
                     mask=(pos < L)[:, None])

    @triton.jit(do_not_specialize=["B", "L", "LP"])
    def _onorm_fwd(O, W, Y, B, L, LP, eps, HEADS: tl.constexpr, D: tl.constexpr, BL: tl.constexpr):
        r, head = tl.program_id(0), tl.program_id(1)
        g = r // B
        cols = tl.arange(0, D)
        w = tl.load(W + g * D + cols).to(tl.float32)[None, :]
        orow = (r * HEADS + head) * LP
        for l0 in tl.range(0, L, BL):
            pos = l0 + tl.arange(0, BL)
            m = (pos < L)[:, None]
            o = tl.load(O + (orow + pos)[:, None] * D + cols[None, :], mask=m, other=0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(o * o, 1) / D + eps)
            tl.store(Y + (r * L + pos)[:, None] * (HEADS * D) + head * D + cols[None, :],
                     (o * rstd[:, None] * w).to(Y.dtype.element_ty), mask=m)

    @triton.jit(do_not_specialize=["B", "L", "LP"])
    def _onorm_bwd(O, W, DY, DO, DWP, B, L, LP, eps, HEADS: tl.constexpr, D: tl.constexpr, BL: tl.constexpr):
        r, head = tl.program_id(0), tl.program_id(1)
        g = r // B
        cols = tl.arange(0, D)
        w = tl.load(W + g * D + cols).to(tl.float32)[None, :]
        orow = (r * HEADS + head) * LP
        dw = tl.zeros([D], tl.float32)
        for l0 in tl.range(0, LP, BL):
            pos = l0 + tl.arange(0, BL)
            m = (pos < L)[:, None]
            o = tl.load(O + (orow + pos)[:, None] * D + cols[None, :], mask=m, other=0.0)
            dy = tl.load(DY + (r * L + pos)[:, None] * (HEADS * D) + head * D + cols[None, :], mask=m,
                         other=0.0).to(tl.float32)
            rstd = 1.0 / tl.sqrt(tl.sum(o * o, 1) / D + eps)
            ohat = o * rstd[:, None]
            dyw = dy * w
            do = (dyw - ohat * (tl.sum(dyw * ohat, 1) / D)[:, None]) * rstd[:, None]
            tl.store(DO + (orow + pos)[:, None] * D + cols[None, :], do, mask=(pos < LP)[:, None])
            dw += tl.sum(dy * ohat, 0)
        tl.store(DWP + (r * HEADS + head) * D + cols, dw)


RMS_ROWS = 32          # rows of width 128 per program
SWIGLU_BLOCK = 1024
SEQ_BLOCK = 32         # positions per loop step in the convolution and output-norm kernels


class RMSNorm(torch.autograd.Function):
    """x [G, ..., C] (C a power of two) normalised over C, times the member's weight w [G, C]."""

    @staticmethod
    def forward(ctx, x, w, eps):
        G, C = w.shape
        x2 = _aligned(x).view(G, -1, C)
        R = x2.shape[1]
        y = torch.empty_like(x2)
        rstd = torch.empty(G, R, device=x.device, dtype=torch.float32)
        w = _aligned(w)          # a member-strided view of the parameter bank: made contiguous once
        _rms_fwd[(G, triton.cdiv(R, RMS_ROWS))](x2, w, y, rstd, R, eps, C=C, BR=RMS_ROWS)
        ctx.save_for_backward(x2, w, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, w, rstd = ctx.saved_tensors
        G, R, C = x2.shape
        blocks = triton.cdiv(R, RMS_ROWS)
        dx = torch.empty_like(x2)
        dwp = torch.empty(G, blocks, C, device=x2.device, dtype=torch.float32)
        _rms_bwd[(G, blocks)](x2, w, _aligned(dy.to(x2.dtype)).view(G, R, C), rstd, dx, dwp, R,
                              C=C, BR=RMS_ROWS)
        return dx.view(dy.shape), dwp.sum(1).to(w.dtype), None


class SwiGLU(torch.autograd.Function):
    """h [..., 2I] -> silu(h[..., :I]) * h[..., I:]."""

    @staticmethod
    def forward(ctx, h):
        h = _aligned(h)
        inner = h.shape[-1] // 2
        n = h.numel() // (2 * inner)
        y = torch.empty(*h.shape[:-1], inner, device=h.device, dtype=h.dtype)
        _swiglu_fwd[(triton.cdiv(n * inner, SWIGLU_BLOCK),)](h, y, n, I=inner, BLOCK=SWIGLU_BLOCK)
        ctx.save_for_backward(h)
        return y

    @staticmethod
    def backward(ctx, dy):
        (h,) = ctx.saved_tensors
        inner = h.shape[-1] // 2
        n = h.numel() // (2 * inner)
        dh = torch.empty_like(h)
        _swiglu_bwd[(triton.cdiv(n * inner, SWIGLU_BLOCK),)](h, _aligned(dy.to(h.dtype)), dh, n, I=inner,
                                                              BLOCK=SWIGLU_BLOCK)
        return dh


class ConvHeads(torch.autograd.Function):
    """DeltaNet's input side: h [G, B, L, 3*H*D + H] (the projection, columns q | k | v | beta logits) and
    the depthwise causal convolution w [G, 3*H*D, 4] -> q, k, v [G*B, H, LP, D] (SiLU, q and k
    L2-normalised) and beta [G*B, H, LP] (sigmoid), zero beyond L: the candidate's inputs, padded."""

    @staticmethod
    def forward(ctx, h, w, heads, LP):
        G, B, L, cin = h.shape
        D = (cin - heads) // (3 * heads)
        h, w = _aligned(h), _aligned(w)
        qkv = [torch.empty(G * B, heads, LP, D, device=h.device, dtype=torch.float32) for _ in range(3)]
        beta = torch.empty(G * B, heads, LP, device=h.device, dtype=torch.float32)
        for part in range(3):
            _conv_fwd[(G * B, heads)](h, w, qkv[part], beta, B, L, LP, part=part, HEADS=heads, D=D, BL=SEQ_BLOCK)
        ctx.save_for_backward(h, w)
        ctx.heads, ctx.LP = heads, LP
        return (*qkv, beta)

    @staticmethod
    def backward(ctx, dq, dk, dv, dbeta):
        h, w = ctx.saved_tensors
        G, B, L, cin = h.shape
        heads, LP = ctx.heads, ctx.LP
        D = (cin - heads) // (3 * heads)
        dh = torch.empty_like(h)
        dwp = torch.empty(G * B, 3 * heads * D, 4, device=h.device, dtype=torch.float32)
        grads = [_aligned(t.float()) if t is not None else torch.zeros(G * B, heads, LP, D, device=h.device)
                 for t in (dq, dk, dv)]
        dbeta = _aligned(dbeta.float()) if dbeta is not None else torch.zeros(G * B, heads, LP, device=h.device)
        dy = torch.empty(G * B, heads, LP, D, device=h.device, dtype=torch.float32)   # reused by each part
        for part in range(3):      # two passes: dy once per position, then its four shifted taps
            _conv_bwd_dy[(G * B, heads)](h, w, grads[part], dbeta, dy, dh, dwp, B, L, LP, part=part,
                                         HEADS=heads, D=D, BL=SEQ_BLOCK)
            _conv_bwd_dx[(G * B, heads)](w, dy, dh, B, L, LP, part=part, HEADS=heads, D=D, BL=SEQ_BLOCK)
        return dh, dwp.view(G, B, 3 * heads * D, 4).sum(1).to(w.dtype), None, None


class HeadNorm(torch.autograd.Function):
    """DeltaNet's output side: o [G*B, H, LP, D] float32 (the candidate's output, padded) -> RMSNorm over D
    with the member's weight w [G, D], the first L positions, in [G, B, L, H*D] layout."""

    @staticmethod
    def forward(ctx, o, w, G, L, eps):
        GB, heads, LP, D = o.shape
        o, w = _aligned(o), _aligned(w)
        y = torch.empty(G, GB // G, L, heads * D, device=o.device, dtype=o.dtype)
        _onorm_fwd[(GB, heads)](o, w, y, GB // G, L, LP, eps, HEADS=heads, D=D, BL=SEQ_BLOCK)
        ctx.save_for_backward(o, w)
        ctx.shape, ctx.eps = (G, L), eps
        return y

    @staticmethod
    def backward(ctx, dy):
        o, w = ctx.saved_tensors
        (G, L), eps = ctx.shape, ctx.eps
        GB, heads, LP, D = o.shape
        do = torch.empty_like(o)
        dwp = torch.empty(GB * heads, D, device=o.device, dtype=torch.float32)
        _onorm_bwd[(GB, heads)](o, w, _aligned(dy.float()), do, dwp, GB // G, L, LP, eps, HEADS=heads, D=D,
                                BL=SEQ_BLOCK)
        return do, dwp.view(G, -1, D).sum(1).to(w.dtype), None, None, None


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return RMSNorm.apply(x, w, eps)


def swiglu(h: torch.Tensor) -> torch.Tensor:
    return SwiGLU.apply(h)


def conv_heads(h: torch.Tensor, w: torch.Tensor, heads: int, LP: int):
    return ConvHeads.apply(h, w, heads, LP)


def head_norm(o: torch.Tensor, w: torch.Tensor, G: int, L: int, eps: float) -> torch.Tensor:
    return HeadNorm.apply(o, w, G, L, eps)


def warm(device: torch.device, dtypes: tuple[torch.dtype, ...] = (torch.float32,), *, width: int = 128,
         heads: int = 4, inner: int = 352, eps: float = 1e-5) -> list[str]:
    """Compile and load every kernel for these activation dtypes, by one small forward and backward each;
    returns the variants now ready. Shapes do not matter: integer arguments are never specialised."""
    if triton is None or not _state["enabled"] or not (device.type == "cuda" or interpreting()):
        return []
    D = width // heads
    for dt in dtypes:
        def leaf(*shape, dtype=dt):
            return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
        y = rms_norm(leaf(1, 2, 3, width), leaf(1, width, dtype=torch.float32), eps)
        y.float().sum().backward()
        swiglu(leaf(1, 2, 3, 2 * inner)).float().sum().backward()
        q, k, v, b = conv_heads(leaf(1, 2, 5, 3 * width + heads), leaf(1, 3 * width, 4, dtype=torch.float32),
                                heads, 32)
        (q.sum() + k.sum() + v.sum() + b.sum()).backward()
        _state["warm"].update({("rms_norm", dt), ("swiglu", dt), ("conv_heads", dt)})
    o = leaf(2, heads, 32, D, dtype=torch.float32)
    head_norm(o, leaf(1, D, dtype=torch.float32), 1, 5, eps).sum().backward()
    _state["warm"].add(("head_norm", torch.float32))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return sorted(f"{kind}:{str(dt).removeprefix('torch.')}" for kind, dt in _state["warm"])
