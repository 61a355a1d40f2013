"""The baseline candidate: DeltaNet's chunkwise delta rule (WY / UT transform), head-first layout.

Every candidate naive.py is derived from this file. tests/test_naive.py checks outputs, final
states and gradients against the token-by-token recurrence in sandbox/reference.py.
"""
import torch
from einops import rearrange


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    """Delta rule S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, read out o_t = S_t^T q_t.

    q, k: [B, H, L, Dk] (L2-normalised); v: [B, H, L, Dv]; beta: [B, H, L] in (0, 1);
    L a multiple of chunk_size. Returns o [B, H, L, Dv] and the final state S [B, H, Dk, Dv].
    """
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    C = chunk_size
    N = L // C
    q = q * Dk ** -0.5

    # Split the sequence into N chunks of C tokens: [B, H, N, C, D].
    q, k, v = (rearrange(x, "b h (n c) d -> b h n c d", c=C) for x in (q, k, v))
    beta = rearrange(beta, "b h (n c) -> b h n c", c=C)
    k_beta = k * beta[..., None]
    v_beta = v * beta[..., None]

    # Within a chunk the C rank-one updates compose into one WY form. With
    # A = stril(diag(beta) K K^T) and T = (I + A)^-1 (unit lower triangular):
    #   w = T diag(beta) K,  u = T diag(beta) V  (the pseudo-values),
    # so the chunk's transition is (I - K^T w) and its input is K^T u.
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    strictly_causal = causal.tril(-1)
    A = (k_beta @ k.transpose(-1, -2)).masked_fill(~strictly_causal, 0)
    eye = torch.eye(C, dtype=A.dtype, device=A.device)
    # The solve runs in at least float32 (no half-precision triangular solve); T is exact, not iterated.
    solve_dtype = torch.promote_types(A.dtype, torch.float32)
    T = torch.linalg.solve_triangular(
        (eye + A).to(solve_dtype), eye.to(solve_dtype), upper=False, unitriangular=True
    ).to(A.dtype)
    w = T @ k_beta
    u = T @ v_beta

    # Intra-chunk attention, causal including the diagonal: token t reads its own update.
    attn = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0)
    # mutate: intra_chunk_softmax(temperature=0.1)
    softmax_upper = torch.ones(attn.shape[-2], attn.shape[-1], dtype=torch.bool, device=attn.device).triu(1)
    attn = torch.softmax((attn / 0.1).masked_fill(softmax_upper, float('-inf')), dim=-1)

    # Per-chunk views. The backward of unbind is one stack, where indexing x[:, :, n] inside the
    # loop would write a full-size zero tensor per chunk (quadratic in the length).
    qs, ks, ws, us, attns = (x.unbind(2) for x in (q, k, w, u, attn))
    S = q.new_zeros(B, H, Dk, Dv)
    o = []
    for n in range(N):
        # The delta: pseudo-values minus what the state entering the chunk already predicts.
        u_n = us[n] - ws[n] @ S
        # mutate: clip_error_rms(max_rms=1.0)
        u_n = u_n * torch.clamp(1.0 / torch.sqrt(u_n.pow(2).mean(-1, keepdim=True) + 1e-6), max=1.0)
        o.append(qs[n] @ S + attns[n] @ u_n)
        S = S + ks[n].transpose(-1, -2) @ u_n
    o = rearrange(torch.stack(o, dim=2), "b h n c d -> b h (n c) d")
    return o, S
