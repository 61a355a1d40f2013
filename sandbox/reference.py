"""Token-by-token delta rule recurrence: the ground truth that naive.py (and every candidate) is checked against.

Computes in the input dtype (float64 in the exactness tests). Tested by tests/test_naive.py.
"""
import torch


def delta_rule_recurrence(q, k, v, beta):
    """S_t = S_{t-1} + k_t u_t^T with u_t = beta_t (v_t - S_{t-1}^T k_t); o_t = S_t^T (q_t Dk^-0.5).

    Shapes as sandbox/naive.py: q, k [B, H, L, Dk], v [B, H, L, Dv], beta [B, H, L].
    Returns o [B, H, L, Dv] and the final state S [B, H, Dk, Dv].
    """
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    q = q * Dk ** -0.5
    S = q.new_zeros(B, H, Dk, Dv)
    o = []
    for t in range(L):
        k_t, q_t = k[:, :, t], q[:, :, t]
        predicted = torch.einsum("bhk,bhkv->bhv", k_t, S)
        u_t = beta[:, :, t, None] * (v[:, :, t] - predicted)
        S = S + k_t[..., :, None] * u_t[..., None, :]
        o.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(o, dim=2), S
