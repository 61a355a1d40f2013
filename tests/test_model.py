"""The MAD model: shapes and parameter counts per mixer, exact chunk padding, G members equal G models."""
import pytest
import torch

from sandbox import model
from sandbox.gated import gated_delta_rule_chunkwise
from sandbox.model import CHUNK, MADModel, count_parameters
from sandbox.naive import delta_rule_chunkwise
from sandbox.reference import delta_rule_recurrence

CORES = {"delta_net": delta_rule_chunkwise, "gated_delta_net": gated_delta_rule_chunkwise, "transformer": None}


def recurrence_core(q, k, v, beta, chunk_size=32):
    """The token-by-token recurrence: needs no padding, so it tells whether padding changed anything."""
    return delta_rule_recurrence(q, k, v, beta)


@pytest.mark.parametrize("model", list(CORES))
@pytest.mark.parametrize("autoencoder", [False, True])
def test_logits_have_one_row_per_position_and_member(model, autoencoder):
    m = MADModel(model, [16, 12], [0, 1], autoencoder=autoencoder, core=CORES[model])
    x = torch.randint(0, 12, (2, 3, 40))
    logits = m(x)
    assert logits.shape == (2, 3, 40, 16)
    assert torch.isfinite(logits).all()
    assert (logits[1, ..., 12:] < -1e8).all(), "classes beyond a member's vocabulary are masked"


def test_parameter_counts_match_mad_and_fla_layouts():
    assert count_parameters("transformer", 16)["non_embedding"] == 403_072      # MAD's mh-attention x2: ~403k
    assert count_parameters("delta_net", 16)["non_embedding"] == 406_208        # 2 x 67,616 + 2 x 135,168 + 640
    gated = count_parameters("gated_delta_net", 16)["non_embedding"]
    assert gated - count_parameters("delta_net", 16)["non_embedding"] == 2 * (128 * 128 + 128 * 4 + 8)
    emb = count_parameters("delta_net", 16)
    assert emb["total"] - emb["non_embedding"] == 16 * 128 + 128 * 16 + 16


def test_padding_to_the_chunk_size_changes_nothing():
    """A length that is not a multiple of the chunk is padded for the candidate and cut back: exact."""
    torch.manual_seed(0)
    L = CHUNK + 7
    x = torch.randint(0, 16, (1, 2, L))
    chunked = MADModel("delta_net", [16], [3], autoencoder=False, core=delta_rule_chunkwise)
    exact = MADModel("delta_net", [16], [3], autoencoder=False, core=recurrence_core)
    torch.testing.assert_close(chunked(x), exact(x), rtol=1e-4, atol=1e-4)


def test_padding_at_the_end_leaves_earlier_logits_unchanged():
    m = MADModel("delta_net", [16], [0], autoencoder=False, core=delta_rule_chunkwise)
    x = torch.randint(0, 16, (1, 2, 27))
    padded = torch.cat([x, torch.zeros(1, 2, 5, dtype=torch.long)], dim=-1)
    torch.testing.assert_close(m(padded)[:, :, :27], m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", list(CORES))
def test_g_members_equal_g_separate_models(model):
    """Same seeds -> same init, same per-member loss and the same gradients as one model per member."""
    vocabs, seeds = [16, 24], [5, 7]
    both = MADModel(model, vocabs, seeds, autoencoder=False, core=CORES[model])
    x = torch.stack([torch.randint(0, v, (2, 33)) for v in vocabs])
    y = torch.stack([torch.randint(0, v, (2, 33)) for v in vocabs])
    y[:, :, :5] = -100
    loss = both.losses(x, y)
    loss.sum().backward()
    for g, (v, s) in enumerate(zip(vocabs, seeds)):
        one = MADModel(model, [v], [s], autoencoder=False, core=CORES[model])
        l1 = one.losses(x[g:g + 1], y[g:g + 1])
        l1.sum().backward()
        torch.testing.assert_close(loss[g], l1[0], rtol=1e-5, atol=1e-6)
        for name, p in one.bank.params.items():
            grad = both.bank[name].grad[g]
            grad = grad[tuple(slice(0, n) for n in p.shape[1:])]
            torch.testing.assert_close(grad, p.grad[0], rtol=1e-4, atol=1e-6, msg=name)


def test_members_do_not_share_gradients():
    m = MADModel("delta_net", [16, 16], [0, 1], autoencoder=True, core=delta_rule_chunkwise)
    x = torch.randint(0, 16, (2, 2, 8))
    y = x.clone()
    loss = m.losses(x, y)
    loss[0].backward()
    assert m.bank.grad[0].abs().sum() > 0
    assert m.bank.grad[1].abs().sum() == 0


def test_fused_layers_equal_their_definitions():
    """The model's layers are written for speed; here each is checked against its textbook form in float64."""
    torch.manual_seed(0)
    G, B, L, C, D = 3, 2, 11, 12, 8
    x = torch.randn(G, B, L, C, dtype=torch.float64)
    w = torch.randn(G, C, 4, dtype=torch.float64)
    padded = torch.nn.functional.pad(x, (0, 0, 3, 0))
    conv = sum(padded[:, :, j:j + L] * w[:, None, None, :, j] for j in range(4))   # y_t = sum_j w_j x_{t-3+j}
    torch.testing.assert_close(model.short_conv(x, w), torch.nn.functional.silu(conv), rtol=1e-12, atol=1e-12)
    gain = torch.randn(G, C, dtype=torch.float64)
    rms = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + model.NORM_EPS) * gain[:, None, None, :]
    torch.testing.assert_close(model.rms_norm(x, gain), rms, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.l2_norm(x), x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6),
                               rtol=1e-12, atol=1e-12)
    o = torch.randn(G * B, 4, L, D, dtype=torch.float64)
    head_gain = torch.randn(G, D, dtype=torch.float64)
    expected = (o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + model.NORM_EPS)).view(G, B, 4, L, D) \
        * head_gain[:, None, None, None, :]
    torch.testing.assert_close(model.head_norm(o, head_gain, G), expected.view(G * B, 4, L, D), rtol=1e-12, atol=1e-12)


def test_split_count_fills_the_gpu_with_weight_gradient_tiles_and_no_more():
    # w_in is 128 x 388: 2 x 7 tiles of 64 x 64 per member
    assert model.split_count(2, 128 * 256, 128, 388) == 8        # 28 tiles -> 224
    assert model.split_count(16, 128 * 128, 128, 388) == 1       # 224 tiles already
    assert model.split_count(1, 128 * 128, 128, 8192) == 1       # the head at V=8192: 256 tiles already
    assert model.split_count(1, 2048, 128, 128) == 2             # at least SPLIT_K_MIN_ROWS rows per piece
    assert model.split_count(1, 4 * 1031, 128, 128) == 4         # a power of two that divides the rows


@pytest.mark.parametrize("bias", [False, True])
def test_split_linear_equals_one_product_with_the_same_gradients(bias, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 512, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 16, 24, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 24, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    dy = torch.randn(2, 8, 512, 24, generator=g, dtype=torch.float64)
    monkeypatch.setattr(model, "SPLIT_K_MIN_ROWS", 256)
    assert model.split_count(2, 8 * 512, 16, 24) == 16
    y = model.linear(x, w, b)
    grads = torch.autograd.grad((y * dy).sum(), [t for t in (x, w, b) if t is not None])
    expect = torch.einsum("gbli,gio->gblo", x, w) + (b[:, None, None, :] if bias else 0)
    torch.testing.assert_close(y, expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], torch.einsum("gblo,gio->gbli", dy, w), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], torch.einsum("gbli,gblo->gio", x, dy), rtol=1e-12, atol=1e-12)
    if bias:
        torch.testing.assert_close(grads[2], dy.sum((1, 2)), rtol=1e-12, atol=1e-12)


def test_bf16_is_a_cuda_setting_the_cpu_trains_in_float32():
    m = MADModel("delta_net", [16], [0], autoencoder=False, core=delta_rule_chunkwise, bf16=True)
    assert m.bf16 is False
    assert m(torch.randint(0, 16, (1, 2, 32))).dtype == torch.float32


@pytest.mark.gpu
def test_bf16_mixed_precision_runs_the_layers_in_bf16_and_the_candidate_in_float32():
    seen = []

    def core(q, k, v, beta, chunk_size=32):
        seen.append({t.dtype for t in (q, k, v, beta)} | {torch.is_autocast_enabled("cuda")})
        return delta_rule_chunkwise(q, k, v, beta, chunk_size=chunk_size)

    m = MADModel("delta_net", [16, 12], [0, 1], autoencoder=False, core=core, device="cuda", bf16=True)
    x = torch.randint(0, 12, (2, 4, 64), device="cuda")
    y = torch.randint(0, 12, (2, 4, 64), device="cuda")
    assert m(x).dtype == torch.bfloat16
    losses = m.losses(x, y)
    assert losses.dtype == torch.float32 and torch.isfinite(losses).all()
    losses.sum().backward()
    assert torch.isfinite(m.bank.grad).all() and m.bank.grad.abs().sum() > 0
    assert all(s == {torch.float32, False} for s in seen), seen
    fp32 = MADModel("delta_net", [16, 12], [0, 1], autoencoder=False, core=delta_rule_chunkwise, device="cuda")
    torch.testing.assert_close(fp32.losses(x, y), losses, rtol=0.05, atol=0.05)
