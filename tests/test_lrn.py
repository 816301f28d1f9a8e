"""The fast LRN computes torch.nn.LocalResponseNorm's numbers, forward and backward."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnet.lrn import LocalResponseNorm, local_response_norm


def reference(x, size, alpha, beta, k):
    """torch's own LRN, in float64 so that it is the exact value to compare against."""
    return torch.nn.functional.local_response_norm(x.double(), size, alpha, beta, k)


def forward_backward(fn, x, grad):
    leaf = x.detach().clone().requires_grad_()
    out = fn(leaf)
    out.backward(grad)
    return out.detach(), leaf.grad.detach()


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 20),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    size=st.integers(1, 7),
    alpha=st.sampled_from([1e-4, 1e-2, 0.5]),
    beta=st.sampled_from([0.75, 0.5, 1.0, 0.3]),
    k=st.sampled_from([1.0, 2.0]),
    channels_last=st.booleans(),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_float32_forward_and_backward(
    n, c, h, w, size, alpha, beta, k, channels_last, scale, seed
):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g) * scale
    grad = torch.randn(n, c, h, w, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        grad = grad.contiguous(memory_format=torch.channels_last)
    ours = LocalResponseNorm(size, alpha, beta, k)
    y, gx = forward_backward(ours, x, grad)
    y_ref, gx_ref = forward_backward(lambda t: reference(t, size, alpha, beta, k), x, grad)
    y_t, gx_t = forward_backward(torch.nn.LocalResponseNorm(size, alpha, beta, k), x, grad)
    assert y.dtype == torch.float32 and gx.dtype == torch.float32
    # 1e-5 relative to the exact (float64) result, or, where float32 itself cannot get that
    # close (a large alpha * sum(x^2) makes the gradient a difference of nearly equal terms),
    # no worse than twice torch's own float32 error there.
    torch_y_err, torch_g_err = rel_err(y_t, y_ref), rel_err(gx_t, gx_ref)
    assert rel_err(y, y_ref) <= max(1e-5, 2 * torch_y_err)
    assert rel_err(gx, gx_ref) <= max(1e-5, 2 * torch_g_err)
    assert rel_err(y, y_t) <= max(1e-5, 3 * torch_y_err)
    assert rel_err(gx, gx_t) <= max(1e-5, 3 * torch_g_err)


def test_ill_conditioned_gradient_is_no_worse_than_torch():
    """The case that bounds every float32 implementation: y = x / sqrt(1 + x^2 / 2) at x ~ 30."""
    x = torch.tensor([[[[30.0]]], [[[-41.0]]]])
    grad = torch.ones_like(x)
    _, gx = forward_backward(LocalResponseNorm(1, 0.5, 0.5, 1.0), x, grad)
    _, gx_ref = forward_backward(lambda t: reference(t, 1, 0.5, 0.5, 1.0), x, grad)
    exact = (1.0 / (1 + 0.5 * x.double() ** 2) ** 1.5).view(-1)
    assert torch.allclose(gx_ref.view(-1).double(), exact, rtol=1e-6)
    assert rel_err(gx, gx_ref) < 1e-3


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 96, 55, 55), (3, 256, 27, 27), (4, 7, 5)])
def test_paper_shapes_and_other_ranks(shape, channels_last):
    torch.manual_seed(0)
    x = torch.randn(shape) * 5
    grad = torch.randn(shape)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y, gx = forward_backward(LocalResponseNorm(5, 1e-4, 0.75, 2.0), x, grad)
    y_ref, gx_ref = forward_backward(lambda t: reference(t, 5, 1e-4, 0.75, 2.0), x, grad)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(gx, gx_ref) < 1e-5
    if channels_last and x.dim() == 4:
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_bfloat16_is_the_rounded_float32_result():
    """torch's CPU LRN has no bfloat16 kernel; ours computes in float32 and rounds once, so each
    output is the float32 result rounded to bfloat16 (relative error <= 2^-8), and the same
    holds for the gradient."""
    torch.manual_seed(0)
    x = (torch.randn(4, 96, 13, 13) * 5).bfloat16()
    grad = torch.randn(4, 96, 13, 13).bfloat16()
    y, gx = forward_backward(LocalResponseNorm(5, 1e-4, 0.75, 2.0), x, grad)
    assert y.dtype == torch.bfloat16 and gx.dtype == torch.bfloat16
    y_ref, gx_ref = forward_backward(
        lambda t: reference(t, 5, 1e-4, 0.75, 2.0), x.double(), grad.double()
    )
    assert torch.equal(y, y_ref.float().bfloat16())
    elementwise = ((gx.double() - gx_ref).abs() / gx_ref.abs().clamp_min(1e-6)).max().item()
    assert elementwise <= 2**-8
    with pytest.raises(NotImplementedError):  # why the baseline in bench/lrn.py casts to float32
        torch.nn.LocalResponseNorm(5)(x)


def test_bfloat16_under_autocast_and_gradcheck_in_float64():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    lrn = LocalResponseNorm(5, 1e-2, 0.75, 2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lrn(conv(torch.randn(2, 3, 9, 9)))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, 3, 0.5, 0.75, 1.0), (x,))


def test_paper_formula_does_not_divide_alpha_by_n():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 4, 4) * 3
    paper = LocalResponseNorm(5, 1e-4, 0.75, 2.0, formula="paper")(x)
    same_as_torch = torch.nn.functional.local_response_norm(x, 5, 5 * 1e-4, 0.75, 2.0)
    assert rel_err(paper, same_as_torch) < 1e-5
    # By hand for one element: b = a / (k + alpha * sum_window a^2)^beta.
    c = 4
    window = x[0, c - 2 : c + 3, 1, 1]
    expected = x[0, c, 1, 1] / (2.0 + 1e-4 * (window**2).sum()) ** 0.75
    assert paper[0, c, 1, 1].item() == pytest.approx(expected.item(), rel=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="formula"):
        LocalResponseNorm(5, formula="caffe")
    with pytest.raises(ValueError, match="at least 3 dims"):
        local_response_norm(torch.randn(4, 5), 5)
    assert "formula='paper'" in repr(LocalResponseNorm(5, formula="paper"))
