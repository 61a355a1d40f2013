"""MAD's 2-block model [mixer, SwiGLU, mixer, SwiGLU] at width 128, for G independent members at once.

Every parameter carries a leading member dimension G and lives in one flat [G, P] buffer, so that
runs sharing shapes (seeds, an lr x wd grid, settings of equal length) train as one job and the
optimiser touches a handful of tensors. Tested by tests/test_model.py (shapes, parameter counts,
padding, G members equal G single models).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sandbox import kernels

WIDTH = 128
SWIGLU_INNER = 352            # int(2 * 128 * 4 / 3) rounded up to a multiple of 16
NORM_EPS = 1e-5
CHUNK = 32                    # chunk size the candidate's delta rule is called with
HEADS = 4                     # DeltaNet / Gated DeltaNet: 4 heads x 32 keys x 32 values (state 4096)
ATTN_HEADS = 16               # MAD's mh-attention: 16 heads x head dim 8, RoPE on all 8 dims
MASKED_LOGIT = -1e9           # logit of a class outside a member's own vocabulary


@dataclass(frozen=True)
class Spec:
    name: str
    shape: tuple[int, ...]
    init: str                 # linear | normal | zeros | ones | conv | a_log | dt_bias
    fan_in: int = 1
    embedding: bool = False   # token embedding or output head: left out of the non-embedding count


def _init(spec: Spec, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    t = torch.empty(shape)
    if spec.init == "linear":       # torch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = 1.0 / math.sqrt(spec.fan_in)
        return t.uniform_(-bound, bound, generator=gen)
    if spec.init == "conv":         # depthwise Conv1d default, fan_in = kernel size
        return t.uniform_(-0.5, 0.5, generator=gen)
    if spec.init == "normal":
        return t.normal_(0.0, 0.02, generator=gen)
    if spec.init == "zeros":
        return t.zero_()
    if spec.init == "ones":
        return t.fill_(1.0)
    if spec.init == "a_log":        # fla: A ~ U(0, 16), A_log = log(A)
        return t.uniform_(0.0, 16.0, generator=gen).log_()
    if spec.init == "dt_bias":      # fla: dt log-uniform in [1e-3, 0.1], clamped, inverse softplus
        dt = torch.exp(t.uniform_(0, 1, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        dt = dt.clamp(min=1e-4)
        return dt + torch.log(-torch.expm1(-dt))
    raise ValueError(spec.init)


def _specs_swiglu(p: str) -> list[Spec]:
    return [Spec(f"{p}.norm", (WIDTH,), "ones"),
            Spec(f"{p}.w12", (WIDTH, 2 * SWIGLU_INNER), "linear", WIDTH),
            Spec(f"{p}.w3", (SWIGLU_INNER, WIDTH), "linear", SWIGLU_INNER)]


def _specs_mixer(p: str, model: str) -> list[Spec]:
    d, hd = WIDTH, WIDTH // HEADS
    if model == "delta_net":      # w_in columns: q | k | v | beta logits
        return [Spec(f"{p}.norm", (d,), "ones"),
                Spec(f"{p}.w_in", (d, 3 * d + HEADS), "linear", d),
                Spec(f"{p}.conv", (3 * d, 4), "conv"),
                Spec(f"{p}.o_norm", (hd,), "ones"),
                Spec(f"{p}.w_out", (d, d), "linear", d)]
    if model == "gated_delta_net":  # w_in columns: q | k | v | output gate | a | beta logits
        return [Spec(f"{p}.norm", (d,), "ones"),
                Spec(f"{p}.w_in", (d, 4 * d + 2 * HEADS), "linear", d),
                Spec(f"{p}.conv", (3 * d, 4), "conv"),
                Spec(f"{p}.a_log", (HEADS,), "a_log"),
                Spec(f"{p}.dt_bias", (HEADS,), "dt_bias"),
                Spec(f"{p}.o_norm", (hd,), "ones"),
                Spec(f"{p}.w_out", (d, d), "linear", d)]
    if model == "transformer":
        return [Spec(f"{p}.norm", (d,), "ones"),
                Spec(f"{p}.w_qkv", (d, 3 * d), "linear", d),
                Spec(f"{p}.b_qkv", (3 * d,), "zeros"),
                Spec(f"{p}.w_out", (d, d), "linear", d),
                Spec(f"{p}.b_out", (d,), "zeros")]
    raise ValueError(f"unknown model {model!r}")


def param_specs(model: str, vocab: int, autoencoder: bool) -> list[Spec]:
    """The parameters of one member, in init order. The autoencoder (Compress) re-inits every Linear to N(0, 0.02)."""
    specs = [Spec("embed", (vocab, WIDTH), "normal", embedding=True)]
    for i in range(2):
        specs += _specs_mixer(f"block{i}.mixer", model) + _specs_swiglu(f"block{i}.mlp")
    if autoencoder:
        specs += [Spec("dec.norm1", (WIDTH,), "ones"), Spec("dec.w1", (WIDTH, WIDTH), "linear", WIDTH),
                  Spec("dec.b1", (WIDTH,), "zeros"), Spec("dec.norm2", (WIDTH,), "ones"),
                  Spec("dec.w2", (WIDTH, WIDTH), "linear", WIDTH), Spec("dec.b2", (WIDTH,), "zeros")]
    specs += [Spec("head.norm", (WIDTH,), "ones"),
              Spec("head.w", (WIDTH, vocab), "linear", WIDTH, embedding=True),
              Spec("head.b", (vocab,), "zeros", embedding=True)]
    if autoencoder:
        specs = [Spec(s.name, s.shape, "normal", s.fan_in, s.embedding) if s.init == "linear" else s
                 for s in specs]
    return specs


def count_parameters(model: str, vocab: int, autoencoder: bool = False) -> dict[str, int]:
    specs = param_specs(model, vocab, autoencoder)
    total = sum(math.prod(s.shape) for s in specs)
    embed = sum(math.prod(s.shape) for s in specs if s.embedding)
    return {"total": total, "non_embedding": total - embed}


class ParamBank:
    """G members' parameters as views of one flat [G, P] buffer; gradients accumulate in a flat [G, P] twin.

    A parameter whose shape differs between members (the vocabulary) takes the largest shape; the rows a
    member does not have stay zero and are never reached (inputs never index them, their logits are masked).
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], flat: torch.Tensor):
        self.shapes, self.flat = shapes, flat
        self.G = flat.shape[0]
        self.grad = torch.zeros_like(flat)
        # the views' strides skip the other members: autograd warns, yet accumulates in place as intended
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
        self.params: dict[str, torch.Tensor] = {}
        start = 0
        for name, shp in shapes.items():
            end = start + math.prod(shp)
            p = flat[:, start:end].view(self.G, *shp).detach().requires_grad_(True)
            p.grad = self.grad[:, start:end].view(self.G, *shp)
            self.params[name] = p
            start = end

    @classmethod
    def initialise(cls, specs_per_member: list[list[Spec]], seeds: list[int], device) -> "ParamBank":
        """Each member initialised on the host from its own seed, exactly as a one-member bank would be."""
        shapes: dict[str, tuple[int, ...]] = {}
        for specs in specs_per_member:
            for s in specs:
                shapes[s.name] = tuple(max(a, b) for a, b in zip(shapes.get(s.name, s.shape), s.shape))
        parts = []
        for specs, seed in zip(specs_per_member, seeds):
            gen = torch.Generator().manual_seed(int(seed))
            member = []
            for s in specs:
                full = torch.zeros(shapes[s.name])
                full[tuple(slice(0, n) for n in s.shape)] = _init(s, s.shape, gen)
                member.append(full.reshape(-1))
            parts.append(torch.cat(member))
        return cls(shapes, torch.stack(parts).to(device))

    def select(self, idx: torch.Tensor) -> "ParamBank":
        """A bank of the members idx (a copy of their current values)."""
        return ParamBank(self.shapes, self.flat[idx].clone())

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.params[name]


SPLIT_K_CTAS = 264             # weight-gradient tiles wanted per GEMM: two waves of an H100's 132 SMs; 0: no split
SPLIT_K_MIN_ROWS = 1024       # rows (tokens) per split at least


def split_count(G: int, rows: int, n_in: int, n_out: int) -> int:
    """How many pieces to cut the token dimension into, so that the weight gradient fills the GPU.

    The gradient of w [G, in, out] is x^T [G, in, T] @ dy [G, T, out]: a few 64x64 output tiles per member
    and a reduction over all T = batch x length tokens. With G = 2 and w_in's 128 x 388 that is 28 tiles on
    132 SMs, each summing 65,536 products: measured 320 us per GEMM at L=256 (NOTES.md). Cutting T into S
    pieces gives S times the tiles (then a sum over S). A power of two that divides T; 1 when no gradient.
    """
    if not SPLIT_K_CTAS:
        return 1
    tiles = G * -(-n_in // 64) * -(-n_out // 64)
    S = 1
    while S * 2 * tiles <= SPLIT_K_CTAS and rows % (S * 2) == 0 and rows // (S * 2) >= SPLIT_K_MIN_ROWS:
        S *= 2
    return S


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x [G, ..., in] @ w [G, in, out] (+ b [G, out]) -> [G, ..., out], one batched matmul for all members.

    When w takes a gradient, each member's tokens are cut into split_count pieces that share a broadcast
    copy of its weight: the forward is the same product, and autograd's sum over the copies is the split-K
    reduction of the weight gradient.
    """
    G, shp, n_in, n_out = x.shape[0], x.shape[1:-1], x.shape[-1], w.shape[-1]
    rows = x.numel() // (G * n_in) if G else 0
    S = split_count(G, rows, n_in, n_out) if w.requires_grad and torch.is_grad_enabled() else 1
    x2 = x.reshape(G * S, rows // S, n_in)
    w2 = w if S == 1 else w.unsqueeze(1).expand(G, S, n_in, n_out).reshape(G * S, n_in, n_out)
    if b is None:
        y = torch.bmm(x2, w2)
    else:
        b2 = b if S == 1 else b.unsqueeze(1).expand(G, S, n_out).reshape(G * S, n_out)
        y = torch.baddbmm(b2[:, None, :], x2, w2)
    return y.view(G, *shp, n_out)


def rms_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dim with a per-member weight w [G, D]; x is [G, ..., D]."""
    if x.shape[-1] == WIDTH and kernels.usable("rms_norm", x, w):
        return kernels.rms_norm(x, w, NORM_EPS)
    return F.rms_norm(x, (x.shape[-1],), eps=NORM_EPS) * w.view(w.shape[0], *([1] * (x.dim() - 2)), w.shape[-1])


def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """fla's l2norm, x / sqrt(sum x^2 + 1e-6), as one fused RMSNorm: D^-1/2 x / sqrt(mean x^2 + 1e-6 / D)."""
    D = x.shape[-1]
    return F.rms_norm(x, (D,), eps=1e-6 / D) * D ** -0.5


def short_conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Depthwise causal convolution of width 4 then SiLU; x [G, B, L, C], w [G, C, 4] -> [G, B, L, C].

    One grouped conv1d over the G*C channels (padded both sides, the first L outputs kept: causal) instead
    of a shifted multiply-add per tap: measured 10% off the whole training step on an H100 (NOTES.md).
    """
    G, B, L, C = x.shape
    K = w.shape[-1]
    y = F.conv1d(x.permute(1, 0, 3, 2).reshape(B, G * C, L), w.reshape(G * C, 1, K), padding=K - 1,
                 groups=G * C)[..., :L]
    return F.silu(y).view(B, G, C, L).permute(1, 0, 3, 2).contiguous()


def to_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[G, B, L, H*D] -> [G*B, H, L, D] (contiguous), the members folded into the batch."""
    G, B, L, HD = x.shape
    return x.view(G * B, L, heads, HD // heads).transpose(1, 2).contiguous()


def from_heads(x: torch.Tensor, G: int) -> torch.Tensor:
    """[G*B, H, L, D] -> [G, B, L, H*D]."""
    GB, H, L, D = x.shape
    return x.transpose(1, 2).reshape(G, GB // G, L, H * D)


def pad_to_chunk(x: torch.Tensor, dim: int = 2) -> torch.Tensor:
    L = x.shape[dim]
    extra = (-L) % CHUNK
    if not extra:
        return x
    pad = [0, 0] * (x.dim() - dim - 1) + [0, extra]
    return F.pad(x, pad)


def head_norm(o: torch.Tensor, w: torch.Tensor, G: int) -> torch.Tensor:
    """Per-head RMSNorm over head_v_dim with a per-member weight: o [G*B, H, L, D], w [G, D]."""
    GB, H, L, D = o.shape
    o = F.rms_norm(o.view(G, GB // G, H, L, D), (D,), eps=NORM_EPS) * w[:, None, None, None, :]
    return o.view(GB, H, L, D)


def call_core(core, *tensors, **kwargs) -> torch.Tensor:
    """The candidate's output o (its final state dropped), computed in float32 even when the layers around it
    run under bf16 autocast: candidates are compared on their own arithmetic, and a half-precision input
    would fail ops that have no bf16 kernel (triangular solves, say)."""
    if torch.is_autocast_enabled("cuda"):
        with torch.autocast("cuda", enabled=False):
            out = core(*(t.float() for t in tensors), **kwargs)
    else:
        out = core(*tensors, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def delta_net_mixer(x, p, pre, core):
    G, B, L, d = x.shape
    h = linear(x, p[f"{pre}.w_in"])
    if kernels.usable("conv_heads", h, p[f"{pre}.conv"]) and kernels.usable("head_norm", p[f"{pre}.o_norm"]):
        return linear(fused_delta_net_core(h, p, pre, core), p[f"{pre}.w_out"])
    qkv = short_conv(h[..., :3 * d], p[f"{pre}.conv"])
    beta = torch.sigmoid(h[..., 3 * d:])                               # [G, B, L, H]
    q, k, v = (to_heads(t, HEADS) for t in qkv.split(d, dim=-1))
    q, k = l2_norm(q), l2_norm(k)
    beta = beta.reshape(G * B, L, HEADS).transpose(1, 2)
    q, k, v, beta = pad_to_chunk(q), pad_to_chunk(k), pad_to_chunk(v), pad_to_chunk(beta)
    o = call_core(core, q, k, v, beta.contiguous(), chunk_size=CHUNK)[:, :, :L]
    o = from_heads(head_norm(o, p[f"{pre}.o_norm"], G), G)
    return linear(o, p[f"{pre}.w_out"])


def fused_delta_net_core(h, p, pre, core):
    """delta_net_mixer between its two projections, through sandbox/kernels.py: the short convolution
    writes q, k, v and beta straight into padded head layout, the output norm reads the candidate's
    output from it. The same function as the torch ops above, to float rounding."""
    G, B, L, _ = h.shape
    q, k, v, beta = kernels.conv_heads(h, p[f"{pre}.conv"], HEADS, L + (-L) % CHUNK)
    o = call_core(core, q, k, v, beta, chunk_size=CHUNK)
    if not isinstance(o, torch.Tensor) or o.shape != v.shape:
        raise ValueError(f"the candidate's output has shape {tuple(getattr(o, 'shape', ()))}, "
                         f"expected {tuple(v.shape)} (that of v)")
    return kernels.head_norm(o.float(), p[f"{pre}.o_norm"], G, L, NORM_EPS)


def gated_delta_net_mixer(x, p, pre, core):
    G, B, L, d = x.shape
    h = linear(x, p[f"{pre}.w_in"])
    qkv = short_conv(h[..., :3 * d], p[f"{pre}.conv"])
    gate = h[..., 3 * d:4 * d]
    a = h[..., 4 * d:4 * d + HEADS]
    beta = torch.sigmoid(h[..., 4 * d + HEADS:])
    A = p[f"{pre}.a_log"].exp()[:, None, None, :]
    g = -A * F.softplus(a + p[f"{pre}.dt_bias"][:, None, None, :])    # log decay, [G, B, L, H]
    q, k, v = (to_heads(t, HEADS) for t in qkv.split(d, dim=-1))
    q, k = l2_norm(q), l2_norm(k)
    beta = beta.reshape(G * B, L, HEADS).transpose(1, 2)
    g = g.reshape(G * B, L, HEADS).transpose(1, 2)
    q, k, v, beta, g = (pad_to_chunk(t) for t in (q, k, v, beta, g))
    o = call_core(core, q, k, v, beta.contiguous(), g.contiguous(), chunk_size=CHUNK)[:, :, :L]
    o = head_norm(o, p[f"{pre}.o_norm"], G) * F.silu(to_heads(gate, HEADS))   # FusedRMSNormGated, swish
    return linear(from_heads(o, G), p[f"{pre}.w_out"])


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary embedding over the whole head dim, halves rotated (flash-attn's non-interleaved), base 10000."""
    L, D = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D))
    ang = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention_mixer(x, p, pre, core=None):
    G, B, L, d = x.shape
    qkv = linear(x, p[f"{pre}.w_qkv"], p[f"{pre}.b_qkv"])
    q, k, v = (to_heads(t, ATTN_HEADS) for t in qkv.split(d, dim=-1))
    o = F.scaled_dot_product_attention(rotary(q), rotary(k), v, is_causal=True)
    return linear(from_heads(o, G), p[f"{pre}.w_out"], p[f"{pre}.b_out"])


MIXERS = {"delta_net": delta_net_mixer, "gated_delta_net": gated_delta_net_mixer,
          "transformer": attention_mixer}


def swiglu(x, p, pre):
    h = linear(x, p[f"{pre}.w12"])
    if kernels.usable("swiglu", h):
        return linear(kernels.swiglu(h), p[f"{pre}.w3"])
    a, b = h.split(SWIGLU_INNER, dim=-1)
    return linear(F.silu(a) * b, p[f"{pre}.w3"])


def sincos_positions(n: int, dim: int) -> torch.Tensor:
    """MAD's posemb_sincos_1d (fairseq): [n, dim] with sin in the first half, cos in the second."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    ang = torch.arange(n, dtype=torch.float32)[:, None] * freq[None, :]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


class MADModel:
    """G members of one architecture. vocabs[g] is member g's own vocabulary: logits beyond it are masked."""

    def __init__(self, model: str, vocabs: list[int], seeds: list[int], *, autoencoder: bool,
                 core=None, device="cpu", bf16: bool = False):
        if model not in MIXERS:
            raise ValueError(f"unknown model {model!r}; expected one of {sorted(MIXERS)}")
        self.model, self.autoencoder, self.core = model, autoencoder, core
        self.device = torch.device(device)
        # MAD trains in bf16 mixed precision (Lightning "bf16"): float32 parameters and optimiser, the
        # layers' matmuls in bf16 under autocast. CUDA only; the candidate's core stays float32 (call_core).
        # The cast cache is off: a captured CUDA graph must re-cast the weights the optimiser just updated.
        self.bf16 = bf16 and self.device.type == "cuda"
        self.G = len(vocabs)
        self.vocab = max(vocabs)
        self.bank = ParamBank.initialise([param_specs(model, v, autoencoder) for v in vocabs], seeds, self.device)
        mask = torch.zeros(self.G, self.vocab)
        for g, v in enumerate(vocabs):
            mask[g, v:] = MASKED_LOGIT
        self.logit_mask = mask.to(self.device)
        self.mixer = MIXERS[model]
        self._positions: dict[int, torch.Tensor] = {}

    def select(self, idx: torch.Tensor) -> None:
        """Keep only the members idx (used when stopped members leave a group)."""
        self.bank = self.bank.select(idx)
        self.logit_mask = self.logit_mask[idx]
        self.G = len(idx)

    def positions(self, n: int) -> torch.Tensor:
        if n not in self._positions:
            self._positions[n] = sincos_positions(n, WIDTH).to(self.device)
        return self._positions[n]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        G, V = self.G, self.vocab
        table = self.bank["embed"].reshape(G * V, WIDTH)
        offsets = (torch.arange(G, device=x.device) * V).view(G, 1, 1)
        return F.embedding(x + offsets, table)

    def precision(self):
        """The autocast context of a forward pass: bf16 mixed precision, or nothing."""
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [G, B, L] token ids -> logits [G, B, L, V] (bf16 under mixed precision)."""
        with self.precision():
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.bank
        h = self.embed(x)
        for i in range(2):
            h = h + self.mixer(rms_norm(h, p[f"block{i}.mixer.norm"]), p, f"block{i}.mixer", self.core)
            h = h + swiglu(rms_norm(h, p[f"block{i}.mlp.norm"]), p, f"block{i}.mlp")
        if self.autoencoder:
            L = x.shape[-1]
            h = h[:, :, -1:, :] + self.positions(L)[None, None]
            h = F.gelu(linear(rms_norm(h, p["dec.norm1"]), p["dec.w1"], p["dec.b1"]))
            h = F.gelu(linear(rms_norm(h, p["dec.norm2"]), p["dec.w2"], p["dec.b2"]))
        # the mask rides on the bias: one [G, V] add instead of a pass over every logit, forward and backward
        return linear(rms_norm(h, p["head.norm"]), p["head.w"], p["head.b"] + self.logit_mask)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member cross entropy, mean over the member's scored tokens (targets != -100): [G]."""
        G, V = self.G, self.vocab
        with self.precision():      # autocast computes the cross entropy in float32
            logits = self._forward(x)
            ce = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=-100, reduction="none")
        ce = ce.view(G, -1)
        scored = (y.view(G, -1) != -100).sum(1).clamp(min=1)
        return ce.sum(1) / scored
