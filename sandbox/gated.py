"""The gated delta rule (Gated DeltaNet's core) for the gated_delta_net reference model, head-first layout.

Chunkwise form and token-by-token recurrence (delta-rule-facts §2a-2b); g is the log decay (<= 0).
tests/test_gated.py checks them against each other and, with g == 0, against sandbox/naive.py.
"""
import torch
from einops import rearrange


def gated_delta_rule_chunkwise(q, k, v, beta, g, chunk_size=32):
    """S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T q_t Dk^-0.5.

    q, k: [B, H, L, Dk] (L2-normalised); v: [B, H, L, Dv]; beta, g: [B, H, L]; L a multiple of
    chunk_size. Returns o [B, H, L, Dv] and the final state S [B, H, Dk, Dv].
    """
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    C = chunk_size
    N = L // C
    q = q * Dk ** -0.5

    q, k, v = (rearrange(x, "b h (n c) d -> b h n c d", c=C) for x in (q, k, v))
    beta, g = (rearrange(x, "b h (n c) -> b h n c", c=C) for x in (beta, g))
    k_beta = k * beta[..., None]
    v_beta = v * beta[..., None]

    # gamma_r: cumulative log decay inside the chunk; decay[i, j] = exp(gamma_i - gamma_j) for i >= j.
    gamma = g.cumsum(-1)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    strictly_causal = causal.tril(-1)
    log_decay = (gamma[..., :, None] - gamma[..., None, :]).masked_fill(~causal, float("-inf"))
    decay = log_decay.exp()

    # UT transform with decay: T = (I + stril(diag(beta) K K^T * decay))^-1.
    A = ((k_beta @ k.transpose(-1, -2)) * decay).masked_fill(~strictly_causal, 0)
    eye = torch.eye(C, dtype=A.dtype, device=A.device)
    solve_dtype = torch.promote_types(A.dtype, torch.float32)
    T = torch.linalg.solve_triangular(
        (eye + A).to(solve_dtype), eye.to(solve_dtype), upper=False, unitriangular=True
    ).to(A.dtype)
    w = T @ (k_beta * gamma.exp()[..., None])
    u = T @ v_beta

    attn = (q @ k.transpose(-1, -2)) * decay
    q_decayed = q * gamma.exp()[..., None]
    # Decay from each token to the end of its chunk, and over the whole chunk.
    k_to_end = k * (gamma[..., -1:] - gamma).exp()[..., None]
    chunk_decay = gamma[..., -1].exp()

    # Per-chunk views: unbind's backward is one stack, not a full-size zero tensor per chunk.
    qs, ks, ws, us, attns, decays = (x.unbind(2) for x in (q_decayed, k_to_end, w, u, attn, chunk_decay))
    S = q.new_zeros(B, H, Dk, Dv)
    o = []
    for n in range(N):
        u_n = us[n] - ws[n] @ S
        o.append(qs[n] @ S + attns[n] @ u_n)
        S = decays[n][:, :, None, None] * S + ks[n].transpose(-1, -2) @ u_n
    o = rearrange(torch.stack(o, dim=2), "b h n c d -> b h (n c) d")
    return o, S


def gated_delta_rule_recurrence(q, k, v, beta, g):
    """Token by token: S <- exp(g_t) S, u_t = beta_t (v_t - S^T k_t), S <- S + k_t u_t^T, o_t = S^T q_t."""
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    q = q * Dk ** -0.5
    S = q.new_zeros(B, H, Dk, Dv)
    o = []
    for t in range(L):
        k_t, q_t = k[:, :, t], q[:, :, t]
        S = g[:, :, t, None, None].exp() * S
        predicted = torch.einsum("bhk,bhkv->bhv", k_t, S)
        u_t = beta[:, :, t, None] * (v[:, :, t] - predicted)
        S = S + k_t[..., :, None] * u_t[..., None, :]
        o.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(o, dim=2), S
