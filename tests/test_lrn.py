"""The fast LRN computes torch.nn.LocalResponseNorm's numbers, forward and backward, in both of
its implementations: the PyTorch path (the reference) and the compiled kernel (native.py)."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnet.ops import lrn, native
from alexnet.ops.lrn import LocalResponseNorm, local_response_norm

IMPLEMENTATIONS = ["torch", "native"]


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
    impl=st.sampled_from(IMPLEMENTATIONS),
)
def test_matches_torch_float32_forward_and_backward(
    n, c, h, w, size, alpha, beta, k, channels_last, scale, seed, impl
):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g) * scale
    grad = torch.randn(n, c, h, w, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        grad = grad.contiguous(memory_format=torch.channels_last)
    ours = LocalResponseNorm(size, alpha, beta, k, implementation=impl)
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


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 96, 55, 55), (3, 256, 27, 27), (4, 7, 5), (2, 6, 3, 4, 5)])
def test_paper_shapes_and_other_ranks(shape, channels_last, impl):
    torch.manual_seed(0)
    x = torch.randn(shape) * 5
    grad = torch.randn(shape)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y, gx = forward_backward(LocalResponseNorm(5, 1e-4, 0.75, 2.0, implementation=impl), x, grad)
    y_ref, gx_ref = forward_backward(lambda t: reference(t, 5, 1e-4, 0.75, 2.0), x, grad)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(gx, gx_ref) < 1e-5
    if channels_last and x.dim() == 4:
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_bfloat16_is_the_rounded_float32_result(impl):
    """torch's CPU LRN has no bfloat16 kernel; ours computes in float32 and rounds once, so each
    output is the float32 result rounded to bfloat16 (relative error <= 2^-8), and the same
    holds for the gradient."""
    torch.manual_seed(0)
    x = (torch.randn(4, 96, 13, 13) * 5).bfloat16()
    grad = torch.randn(4, 96, 13, 13).bfloat16()
    y, gx = forward_backward(LocalResponseNorm(5, 1e-4, 0.75, 2.0, implementation=impl), x, grad)
    assert y.dtype == torch.bfloat16 and gx.dtype == torch.bfloat16
    y_ref, gx_ref = forward_backward(
        lambda t: reference(t, 5, 1e-4, 0.75, 2.0), x.double(), grad.double()
    )
    # float32 rounding may differ in its last bit between the two; bfloat16 keeps 8 of 24 bits.
    assert (y.double() - y_ref.float().bfloat16().double()).abs().max() <= 2**-8 * y_ref.abs().max()
    if impl == "torch":
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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_native_reduced_precision_matches_the_torch_path(dtype, channels_last):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(3, 48, 13, 13) * 4).to(dtype).contiguous(memory_format=fmt)
    grad = torch.randn(3, 48, 13, 13).to(dtype).contiguous(memory_format=fmt)
    results = [forward_backward(LocalResponseNorm(5, 1e-4, 0.75, 2.0, implementation=i), x, grad)
               for i in IMPLEMENTATIONS]  # fmt: skip
    (y_t, g_t), (y_n, g_n) = results
    assert y_n.dtype == dtype and g_n.dtype == dtype
    assert y_n.is_contiguous(memory_format=fmt) and g_n.is_contiguous(memory_format=fmt)
    ulp = 2**-8 if dtype == torch.bfloat16 else 2**-11
    assert rel_err(y_n, y_t) <= ulp and rel_err(g_n, g_t) <= 2 * ulp


def test_native_takes_any_strides():
    """A channel slice, a transposed tensor and a view with gaps are read correctly."""
    torch.manual_seed(0)
    base = torch.randn(2, 12, 7, 9) * 3
    for x in (base[:, ::2], base.transpose(2, 3), base[..., 1:6]):
        grad = torch.randn(x.shape)
        y, gx = forward_backward(LocalResponseNorm(3, 1e-2, 0.75, 1.0, implementation="native"), x,
                                 grad)  # fmt: skip
        y_ref, gx_ref = forward_backward(lambda t: reference(t, 3, 1e-2, 0.75, 1.0), x, grad)
        assert rel_err(y, y_ref) < 1e-5 and rel_err(gx, gx_ref) < 1e-5


def test_auto_picks_native_for_cpu_floats_and_torch_for_float64():
    x = torch.zeros(1, 4, 2, 2)
    assert lrn.pick_implementation(x) == "native"
    assert lrn.pick_implementation(x.bfloat16()) == "native"
    assert lrn.pick_implementation(x.double()) == "torch"


def test_a_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    def broken(**_):
        raise RuntimeError("g++: command not found")

    monkeypatch.setattr(cpp_extension, "load", broken)
    monkeypatch.setenv("ALEXNET_NATIVE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")  # the machine as the message says it is
    native.load.cache_clear()
    lrn._CHOSEN.clear()  # the choice made with the library as it was
    try:
        with pytest.warns(RuntimeWarning, match="g\\+\\+: command not found.*apt-get install g"):
            assert native.load("lrn_cpu") is False
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert native.load("lrn_cpu") is False  # remembered: no second warning
            x = torch.randn(2, 8, 3, 3)
            assert lrn.pick_implementation(x) == "torch"
            with pytest.raises(RuntimeError, match="not available"):
                lrn.pick_implementation(x, "native")
    finally:
        native.load.cache_clear()
        lrn._CHOSEN.clear()  # the choice made with the library as it was


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("ALEXNET_NATIVE", "0")
    native.load.cache_clear()
    lrn._CHOSEN.clear()  # the choice made with the library as it was
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert native.load("lrn_cpu") is False
            assert lrn.pick_implementation(torch.zeros(1, 4, 2, 2)) == "torch"
    finally:
        native.load.cache_clear()
        lrn._CHOSEN.clear()  # the choice made with the library as it was


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_relu_is_relu_then_lrn(impl, channels_last):
    """relu=True gives what an in-place ReLU followed by the LRN gives, both directions,
    including where the input is exactly zero or NaN."""
    torch.manual_seed(0)
    x = torch.randn(2, 9, 4, 5) * 3
    x[0, 0, 0, 0], x[1, 2, 3, 4] = 0.0, float("nan")
    grad = torch.randn(2, 9, 4, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fused = LocalResponseNorm(5, 1e-2, 0.75, 2.0, implementation=impl, relu=True)
    plain = LocalResponseNorm(5, 1e-2, 0.75, 2.0, implementation=impl)
    y, gx = forward_backward(fused, x, grad)
    y_ref, gx_ref = forward_backward(lambda t: plain(torch.relu(t)), x, grad)
    assert torch.allclose(y, y_ref, rtol=1e-6, atol=0, equal_nan=True)
    assert torch.allclose(gx, gx_ref, rtol=1e-6, atol=1e-7, equal_nan=True)
    assert (gx[x <= 0] == 0).all()


def test_networks_fuse_relu_into_lrn_and_keep_their_layer_indices():
    from alexnet.models import build_model
    from alexnet.ops.lrn import ReLUInLRN

    fused = build_model("alexnet")
    assert isinstance(fused.features[1], ReLUInLRN) and fused.features[2].relu
    tanh = build_model("alexnet", activation="tanh")
    assert isinstance(tanh.features[1], torch.nn.Tanh) and not tanh.features[2].relu
    assert list(fused.state_dict()) == list(tanh.state_dict())


TRITON_CHECK = """
import torch
from alexnet.ops import lrn_triton
from alexnet.ops.lrn import _torch_backward, _torch_forward
torch.manual_seed(0)
cases = [((2, 10, 5, 6), False, 5, 0.75, False), ((2, 10, 5, 6), True, 5, 0.75, True),
         ((1, 7, 3, 3), True, 4, 0.6, False), ((2, 5, 9), False, 3, 0.5, True),
         ((1, 3, 40, 40), False, 5, 0.75, True), ((1, 3, 40, 40), True, 5, 0.75, False)]
# (the last two span two programs along the positions, so the masks between them count)
for shape, cl, size, beta, relu in cases:
    x, g = torch.randn(shape) * 5, torch.randn(shape)
    if cl:
        x, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, g))
    args = (size, 1e-2, beta, 2.0, relu)
    y, y_ref = lrn_triton.forward(x, *args), _torch_forward(x, *args)
    gx, gx_ref = lrn_triton.backward(g, x, *args), _torch_backward(g, x, *args)
    assert torch.allclose(y, y_ref, rtol=1e-5, atol=1e-6), (shape, cl)
    assert torch.allclose(gx, gx_ref, rtol=1e-5, atol=1e-6), (shape, cl)
    assert y.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
print("ok")
"""


def test_triton_kernels_match_the_reference_in_the_interpreter():
    """The GPU's kernels (lrn_triton.py), run by Triton's CPU interpreter."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_under_torch_compile_the_same_numbers():
    """torch.compile traces around the kernel choice and keeps the native ops (their fake
    kernels give the output's shape and layout), forward and backward."""
    torch.manual_seed(0)
    x = (torch.randn(2, 16, 6, 6) * 3).contiguous(memory_format=torch.channels_last)
    layer = LocalResponseNorm(5, 1e-2, 0.75, 2.0, relu=True)
    y, gx = forward_backward(layer, x, torch.ones_like(x))
    y_c, gx_c = forward_backward(torch.compile(layer), x, torch.ones_like(x))
    assert torch.allclose(y, y_c, rtol=1e-6) and torch.allclose(gx, gx_c, rtol=1e-6, atol=1e-7)
    assert y_c.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_huge_activations_stay_finite(impl, channels_last):
    """d ~ 5e26 overflows d * sqrt(d) in float32; every lane (vector and scalar tail) must
    still give x * d^-0.75, as float64 does."""
    x = torch.full((1, 17, 3, 3), 1e15)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = LocalResponseNorm(5, 1e-4, 0.75, 2.0, implementation=impl)(x)
    y_ref = reference(x, 5, 1e-4, 0.75, 2.0)
    assert torch.isfinite(y).all() and rel_err(y, y_ref) < 1e-5


def test_a_built_kernel_loads_without_building(monkeypatch):
    """Once built, a process loads the library directly: no compiler, no ninja."""
    from torch.utils import cpp_extension

    assert native.load("lrn_cpu")  # built (or found) in the shared test directory

    def no_build(**_):
        raise AssertionError("cpp_extension.load was called for a kernel already built")

    monkeypatch.setattr(cpp_extension, "load", no_build)
    native.load.cache_clear()
    lrn._CHOSEN.clear()  # the choice made with the library as it was
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert native.load("lrn_cpu") is True
    finally:
        native.load.cache_clear()
        lrn._CHOSEN.clear()  # the choice made with the library as it was


def test_a_build_folder_that_is_a_file_warns_and_falls_back(monkeypatch, tmp_path):
    blocker = tmp_path / "native"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ALEXNET_NATIVE_DIR", str(blocker))
    native.load.cache_clear()
    lrn._CHOSEN.clear()  # the choice made with the library as it was
    try:
        with pytest.warns(RuntimeWarning, match="could not build the native lrn_cpu kernel"):
            assert native.load("lrn_cpu") is False
    finally:
        native.load.cache_clear()
        lrn._CHOSEN.clear()  # the choice made with the library as it was


def test_the_compiled_network_is_one_graph_once_the_kernel_is_chosen():
    """torch.compile must not split the network at each LRN: the choice of kernel is made
    ahead (train.wrap does) and read back as a constant while tracing."""
    from alexnet.models import build_model

    model = build_model("alexnet", num_classes=10)
    x = torch.randn(2, 3, 227, 227)
    lrn.choose_ahead(x.device, (torch.float32,))
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0


def test_a_build_on_a_full_disk_says_so_rather_than_blame_the_compiler(monkeypatch, tmp_path):
    """A full cache disk gave "install a C++ compiler" as the remedy."""
    from torch.utils import cpp_extension

    def full(**_):
        raise RuntimeError("Error building extension 'alexnet_lrn_cpu'")

    monkeypatch.setattr(cpp_extension, "load", full)
    monkeypatch.setattr(native, "free_bytes", lambda _folder: 0)
    monkeypatch.setenv("ALEXNET_NATIVE_DIR", str(tmp_path))
    native.load.cache_clear()
    lrn._CHOSEN.clear()
    try:
        with pytest.warns(RuntimeWarning, match="is full: make room") as said:
            assert native.load("lrn_cpu") is False
        assert "compiler" not in str(said[0].message)
    finally:
        native.load.cache_clear()
        lrn._CHOSEN.clear()


def test_a_build_whose_folder_vanished_says_so_not_to_install_a_compiler(tmp_path):
    """`alexnet cache clear` during a build was answered with "install a C++ compiler" on a
    machine that has one."""
    from alexnet.ops.native import _why_not_built

    gone = tmp_path / "native" / "lrn-abc"
    said = _why_not_built(FileNotFoundError(2, "No such file or directory"), "LRN", gone)
    assert "was removed while it was built" in said and "apt-get" not in said
