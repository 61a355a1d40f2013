"""The fused kernels of sandbox/kernels.py against the model's torch ops: outputs and every gradient.

On CPU the kernels run under triton's interpreter: triton must be imported with TRITON_INTERPRET=1,
so one test runs this file again in a subprocess with it set, and that run does the comparisons. On a
GPU (marked `gpu`) they run compiled, in float32 and in bf16 mixed precision. Skipped where triton is
not installed.
"""
import os
import subprocess
import sys

import pytest
import torch

from sandbox import model
from sandbox.model import MADModel
from sandbox.naive import delta_rule_chunkwise

pytest.importorskip("triton")
from sandbox import kernels  # noqa: E402

INTERPRETED = kernels.interpreting()
if INTERPRETED:
    # triton 3.5's interpreter turns a scalar (a 1-element array) into a loop bound with int(array), which
    # numpy >= 2.3 refuses for arrays of one dimension; .item() is what it means (3.9 needs no help)
    from triton.runtime import interpreter

    _patch_tensor = interpreter._patch_lang_tensor

    def _patch_lang_tensor(tensor, *args):
        _patch_tensor(tensor, *args)
        tensor.__index__ = lambda self: int(self.handle.data.item())

    interpreter._patch_lang_tensor = _patch_lang_tensor
interpreted_run = pytest.mark.skipif(not INTERPRETED, reason="run by test_kernels_under_triton_interpreter")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def interpreted():
    saved = {k: (set(v) if isinstance(v, set) else v) for k, v in kernels._state.items()}
    yield kernels
    kernels._state.update(saved)


@pytest.mark.skipif(INTERPRETED, reason="this is the interpreted run")
def test_kernels_under_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" in r.stdout


def losses_and_grads(m: MADModel, x, y):
    m.bank.grad.zero_()
    loss = m.losses(x, y)
    loss.sum().backward()
    return loss.detach().clone(), m.bank.grad.clone()


def train_step(mod, device, *, fused, model_name="delta_net", autoencoder=False, L=45, bf16=False):
    """Losses and flat gradients of one step of two fixed members, through the kernels or the torch ops."""
    torch.manual_seed(0)
    x = torch.randint(0, 12, (2, 3, L), device=device)
    y = torch.randint(0, 12, (2, 3, L), device=device)
    y[0, 0, :2] = -100
    m = MADModel(model_name, [16, 12], [1, 2], autoencoder=autoencoder, device=device, bf16=bf16,
                 core=delta_rule_chunkwise if model_name == "delta_net" else None)
    mod.set_enabled(fused)
    try:
        return losses_and_grads(m, x, y)
    finally:
        mod.set_enabled(True)


def compare_with_torch_ops(mod, device, rtol=2e-4, atol=2e-5, **kw):
    """The same members trained one step with the kernels and with the torch ops: equal losses and grads."""
    fused, plain = train_step(mod, device, fused=True, **kw), train_step(mod, device, fused=False, **kw)
    torch.testing.assert_close(fused[0], plain[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(fused[1], plain[1], rtol=rtol, atol=atol)
    assert fused[1].abs().sum() > 0


@interpreted_run
def test_interpreted_kernels_give_the_torch_ops_losses_and_gradients(interpreted):
    """L=45 is padded to 64 for the candidate (zeros beyond L)."""
    compare_with_torch_ops(interpreted, torch.device("cpu"), L=45)


@interpreted_run
def test_interpreted_kernels_cover_the_autoencoder_and_the_transformer(interpreted):
    compare_with_torch_ops(interpreted, torch.device("cpu"), autoencoder=True, L=9)
    compare_with_torch_ops(interpreted, torch.device("cpu"), model_name="transformer", L=9)


@interpreted_run
def test_each_kernel_matches_its_torch_op_in_isolation(interpreted):
    """Layer by layer, so that a mismatch names its kernel."""
    torch.manual_seed(1)
    G, B, L, d, H = 2, 3, 37, 128, 4
    x = torch.randn(G, B, L, d, requires_grad=True)
    w = (1 + 0.1 * torch.randn(G, d)).requires_grad_(True)
    fused = interpreted.rms_norm(x, w, 1e-5)
    plain = torch.nn.functional.rms_norm(x, (d,), eps=1e-5) * w[:, None, None, :]
    g = torch.randn_like(plain)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for u, v in zip(torch.autograd.grad(fused, (x, w), g), torch.autograd.grad(plain, (x, w), g)):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)

    h = torch.randn(G, B, L, 3 * d + H, requires_grad=True)
    cw = torch.randn(G, 3 * d, 4, requires_grad=True)
    fused = interpreted.conv_heads(h, cw, H, 64)
    qkv = model.short_conv(h[..., :3 * d], cw)
    q, k, v = (model.to_heads(t, H) for t in qkv.split(d, dim=-1))
    beta = torch.sigmoid(h[..., 3 * d:]).reshape(G * B, L, H).transpose(1, 2)
    plain = [model.pad_to_chunk(t) for t in (model.l2_norm(q), model.l2_norm(k), v, beta)]
    grads = [torch.randn_like(t) for t in plain]
    for name, f, p in zip("qkvb", fused, plain):
        torch.testing.assert_close(f, p, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
    a = torch.autograd.grad(fused, (h, cw), grads)
    b = torch.autograd.grad(plain, (h, cw), grads)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)

    o = torch.randn(G * B, H, 64, d // H, requires_grad=True)
    ow = (1 + 0.1 * torch.randn(G, d // H)).requires_grad_(True)
    fused = interpreted.head_norm(o, ow, G, L, 1e-5)
    plain = model.from_heads(model.head_norm(o[:, :, :L], ow, G), G)
    g = torch.randn_like(plain)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for u, v in zip(torch.autograd.grad(fused, (o, ow), g), torch.autograd.grad(plain, (o, ow), g)):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


@interpreted_run
def test_a_candidate_output_of_the_wrong_shape_is_refused_before_any_kernel_reads_it(interpreted):
    def short(q, k, v, beta, chunk_size=32):
        return v[:, :, :-1], None
    m = MADModel("delta_net", [16], [0], autoencoder=False, core=short)
    with pytest.raises(ValueError, match="expected"):
        m(torch.randint(0, 16, (1, 2, 40)))


@interpreted_run
def test_after_freeze_only_warmed_variants_launch(interpreted):
    h = torch.randn(1, 2, 5, 388, dtype=torch.bfloat16)
    assert interpreted.usable("conv_heads", h)
    ready = interpreted.warm(torch.device("cpu"), (torch.float32,))
    assert "conv_heads:float32" in ready and "head_norm:float32" in ready
    interpreted.freeze()
    assert interpreted.usable("conv_heads", h.float())
    assert not interpreted.usable("conv_heads", h), "a bf16 variant was never compiled"


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("L", [45, 256])
def test_compiled_kernels_give_the_torch_ops_losses_and_gradients_on_gpu(L):
    compare_with_torch_ops(kernels, torch.device("cuda"), L=L, rtol=2e-3, atol=2e-4)   # TF32 matmuls


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("L", [45, 256])
def test_bf16_through_the_kernels_is_as_accurate_as_through_the_torch_ops(L):
    """Under bf16 autocast the two paths round in different places; measured against the float32 step,
    the kernels (which compute in float32 from bf16 inputs) must not be the less accurate."""
    cuda_dev = torch.device("cuda")
    truth = train_step(kernels, cuda_dev, fused=False, L=L)[1]
    err = {}
    for fused in (True, False):
        grads = train_step(kernels, cuda_dev, fused=fused, L=L, bf16=True)[1]
        err[fused] = ((grads - truth).norm() / truth.norm()).item()
    assert err[True] < 5e-2, err
    assert err[True] <= 1.25 * err[False] + 1e-3, err
