# corpus: full rather than causal attention inside a chunk
# expect: invalid causality
import torch
from einops import rearrange


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    B, H, L, Dk = q.shape
    C = chunk_size
    N = L // C
    q = q * Dk ** -0.5
    q, k, v = (rearrange(x, "b h (n c) d -> b h n c d", c=C) for x in (q, k, v))
    beta = rearrange(beta, "b h (n c) -> b h n c", c=C)
    k_beta, v_beta = k * beta[..., None], v * beta[..., None]
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    A = (k_beta @ k.transpose(-1, -2)).masked_fill(~causal.tril(-1), 0)
    eye = torch.eye(C, dtype=A.dtype, device=A.device)
    T = torch.linalg.solve_triangular(eye + A, eye, upper=False, unitriangular=True)
    w, u = T @ k_beta, T @ v_beta
    attn = q @ k.transpose(-1, -2)
    S = q.new_zeros(B, H, Dk, v.shape[-1])
    o = []
    for n in range(N):
        u_n = u[:, :, n] - w[:, :, n] @ S
        o_n = q[:, :, n] @ S + attn[:, :, n] @ u_n
        o.append(o_n)
        S = S + k[:, :, n].transpose(-1, -2) @ u_n
    o = rearrange(torch.stack(o, dim=2), "b h n c d -> b h (n c) d")
    return o, S
