"""winograd.py: Winograd convolutions for float32 inference on the CPU, against the direct
convolution in float64 (the exact answer float32 rounds), the layers that take them, and when
they step aside."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from alexnet.inference.prepared import infer, prepare_for_inference
from alexnet.models import build_model
from alexnet.ops import native, winograd

needs_kernel = pytest.mark.skipif(not winograd.enabled(), reason="no compiled Winograd kernel here")


@pytest.mark.parametrize(
    ("m", "r"), [(2, 3), (3, 3), (4, 3), (5, 3), (6, 3), (2, 5), (3, 5), (4, 5)]
)
def test_the_transforms_compute_a_correlation_exactly(m, r):
    """In exact arithmetic A^T [(G g) * (B^T d)] is the correlation y_i = sum_k d_(i+k) g_k
    for every tile this module uses: checked on the unit vectors, which span every input."""
    a_t, g_mat, b_t = winograd.transforms(m, r)
    n = m + r - 1
    for di in range(n):
        for gk in range(r):
            d = [Fraction(int(i == di)) for i in range(n)]
            g = [Fraction(int(k == gk)) for k in range(r)]
            gg = [sum(row[k] * g[k] for k in range(r)) for row in g_mat]
            bd = [sum(row[i] * d[i] for i in range(n)) for row in b_t]
            y = [sum(a_t[u][p] * gg[p] * bd[p] for p in range(n)) for u in range(m)]
            assert y == [sum(d[i + k] * g[k] for k in range(r)) for i in range(m)]


def test_the_tile_needs_the_fewest_multiplications_within_eight_points():
    assert winograd.tile_for(5, 27) == 4  # conv2: F(4, 5), 8 x 8 points
    assert winograd.tile_for(3, 13) == 5  # conv3-5: F(5, 3), 3 x 3 tiles of 7 x 7 cover 13
    assert winograd.tile_for(3, 28) == 6  # 5 x 5 tiles of 8 x 8 points: 1600 against 1764
    assert all(
        m + r - 1 <= 8 for r in (3, 5) for m in map(lambda o: winograd.tile_for(r, o), range(1, 60))
    )


def exact(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    bias = None if conv.bias is None else conv.bias.double()
    return F.conv2d(
        x.double(), conv.weight.double(), bias, padding=conv.padding, groups=conv.groups
    )


def relative_error(y: torch.Tensor, exact_y: torch.Tensor) -> float:
    return ((y.double() - exact_y).abs().max() / exact_y.abs().max()).item()


@needs_kernel
@pytest.mark.parametrize(
    ("cin", "cout", "r", "groups", "pad", "batch", "h", "w"),
    [
        (96, 256, 5, 2, 2, 3, 27, 27),  # conv2's shape
        (256, 384, 3, 1, 1, 2, 13, 13),  # conv3's
        (384, 256, 3, 2, 1, 2, 13, 13),  # conv5's
        (5, 7, 3, 1, 0, 4, 9, 11),  # odd channels, no padding, not square
        (6, 4, 5, 2, 1, 3, 12, 7),  # padding smaller than the kernel's half
        (9, 6, 3, 3, 3, 2, 8, 10),  # three towers, padding larger than the kernel's half
        (3, 8, 3, 1, 1, 1, 40, 40),  # one image, many tiles
    ],
)
def test_matches_the_exact_convolution_as_closely_as_the_direct_one(
    cin, cout, r, groups, pad, batch, h, w
):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, r, padding=pad, groups=groups)
    twin = winograd.WinogradConv2d.of(conv)
    x = torch.randn(batch, cin, h, w).relu()
    with torch.inference_mode():
        direct = conv(x)
        for m in range(2, winograd.LARGEST_TILE - r + 2):  # every tile: 4 to 8 points
            for layout in (torch.channels_last, torch.contiguous_format):
                y = twin.convolve(x.contiguous(memory_format=layout), m)
                assert y.shape == direct.shape and y.is_contiguous(
                    memory_format=torch.channels_last
                )
                # Within 5e-5 of the largest output (measured up to 2e-5); the direct float32
                # sum within 5e-6. bfloat16, which inference takes on CPUs fast at it: 3.5e-3.
                assert relative_error(y, exact(conv, x)) < 5e-5, (m, layout)
    assert relative_error(direct, exact(conv, x)) < 5e-6


@needs_kernel
def test_a_batch_done_in_runs_is_the_same_bits(monkeypatch):
    conv = torch.nn.Conv2d(16, 24, 5, padding=2, groups=2)
    twin = winograd.WinogradConv2d.of(conv)
    x = torch.randn(7, 16, 12, 12)
    with torch.inference_mode():
        whole = twin.convolve(x, 4)
        monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)  # one image at a time
        assert torch.equal(twin.convolve(x, 4), whole)


@needs_kernel
def test_steps_aside_for_training_other_types_and_thin_inputs(monkeypatch):
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    twin = winograd.WinogradConv2d.of(conv)
    big = torch.randn(4, 8, 16, 16)  # 64 tiles of F(4, 3)
    with torch.inference_mode():
        thin = big[:1, :, :6, :6]  # 4 tiles
        assert torch.equal(twin(thin), conv(thin))
        assert torch.equal(twin(big[0]), conv(big[0]))  # unbatched
        assert not torch.equal(twin(big), conv(big))  # the Winograd way: other rounding
        with monkeypatch.context() as patched:  # in a process where the kernel cannot load
            patched.setattr(native, "load", lambda name: False)
            assert torch.equal(twin(big), conv(big))
    with torch.no_grad():  # (parameters changed under inference_mode could not learn)
        twin.double()  # shares conv's parameters
        assert torch.equal(twin(big.double()), conv(big.double()))
        twin.bfloat16()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 input, bfloat16 weights
            assert torch.equal(twin(big), conv(big))
        twin.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 weights too
            assert torch.equal(twin(big), conv(big))
    twin.requires_grad_(False)
    wanted = big.clone().requires_grad_()  # a gradient for the input alone (a saliency map)
    twin(wanted).sum().backward()
    assert wanted.grad is not None
    twin.requires_grad_(True)
    twin(big).sum().backward()  # learning: the direct convolution, with its gradients
    assert twin.weight.grad is not None


def test_only_the_convolutions_it_computes_and_copies_the_mode():
    with pytest.raises(ValueError, match="not a convolution"):
        winograd.WinogradConv2d.of(torch.nn.Conv2d(8, 8, 3, stride=2))
    conv = torch.nn.Conv2d(8, 8, 3).eval()
    assert not winograd.WinogradConv2d.of(conv).training


@needs_kernel
def test_new_weights_are_transformed_again():
    conv = torch.nn.Conv2d(8, 8, 3, padding=1).requires_grad_(False)
    twin = winograd.WinogradConv2d.of(conv)
    x = torch.randn(4, 8, 16, 16)
    with torch.inference_mode():
        first = twin(x)
        twin.weight.mul_(2)  # in place
        assert relative_error(twin(x), exact(twin, x)) < 5e-5
        twin.to(torch.bfloat16).float()  # a new tensor, rounded
        assert relative_error(twin(x), exact(twin, x)) < 5e-5
        assert not torch.allclose(first, twin(x))


@needs_kernel
def test_weights_made_under_inference_mode():
    with torch.inference_mode():
        conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        twin = winograd.WinogradConv2d.of(conv)
        x = torch.randn(4, 8, 16, 16)
        assert relative_error(twin(x), exact(conv, x)) < 5e-5


@needs_kernel
def test_inference_in_float32_takes_it_for_the_papers_network_and_keeps_its_answers():
    torch.manual_seed(0)
    model = build_model("alexnet")
    plain = build_model("alexnet")
    plain.load_state_dict(model.state_dict())
    keys = set(model.state_dict())
    prepare_for_inference(model, torch.device("cpu"), None, True)
    swapped = [n for n, mod in model.named_modules() if isinstance(mod, winograd.WinogradConv2d)]
    assert swapped == ["features.4", "features.8", "features.10", "features.12"]  # conv2-5
    assert set(model.state_dict()) == keys  # the same weights file fits it
    x = torch.randn(4, 3, 227, 227)
    logits = infer(model, x.contiguous(memory_format=torch.channels_last), None)
    with torch.inference_mode():
        expected = plain.eval().double()(x.double())
    assert relative_error(logits, expected) < 1e-4
    assert torch.equal(logits.argmax(1), expected.argmax(1))


@needs_kernel
def test_layers_of_few_channels_stay_direct():
    """First layers (one or three channels in) and thin ones lose to the direct convolution
    (winograd.SMALLEST_IN and SMALLEST_OUT say by how much)."""
    small = build_model("alexnet-small", num_classes=10, in_channels=1, input_size=28)
    prepare_for_inference(small, torch.device("cpu"), None, True)
    taken = [n for n, m in small.named_modules() if isinstance(m, winograd.WinogradConv2d)]
    assert "features.0" not in taken
    assert all(
        m.in_channels // m.groups >= 48
        for m in small.modules()
        if isinstance(m, winograd.WinogradConv2d)
    )
    four = build_model("convnet4", num_classes=10, in_channels=3, input_size=32)
    prepare_for_inference(four, torch.device("cpu"), None, True)
    assert not any(isinstance(m, winograd.WinogradConv2d) for m in four.modules())


@needs_kernel
def test_the_kernel_refuses_arguments_that_do_not_agree():
    ops = torch.ops.alexnet_winograd
    a_t, _, b_t = (
        torch.tensor([[float(v) for v in row] for row in t]) for t in winograd.transforms(2, 3)
    )
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="square"):
        ops.input_tiles(x, b_t[:3], 2, 1, 1, 3, 3)
    products = torch.randn(16, 9, 4)
    y = torch.empty(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="do not agree"):  # 2x2 tiles of 2 cover 4x4 of 6x6
        ops.output_tiles(products[:, :4], a_t, torch.zeros(4), y, 2, 2, 0)
    with pytest.raises(RuntimeError, match="do not agree"):
        ops.output_tiles(products[:, :4], a_t, torch.zeros(4), y, 3, 3, 0)  # fewer tiles than 3x3


def test_not_in_bfloat16_nor_when_switched_off(monkeypatch):
    model = build_model("alexnet-small", num_classes=10, in_channels=1, input_size=28)
    prepare_for_inference(model, torch.device("cpu"), torch.bfloat16, True)
    assert not any(isinstance(m, winograd.WinogradConv2d) for m in model.modules())
    paper = build_model("alexnet")
    for off in ("0", "off", "False"):
        monkeypatch.setenv("ALEXNET_WINOGRAD", off)
        prepare_for_inference(paper, torch.device("cpu"), None, True)
        assert not any(isinstance(m, winograd.WinogradConv2d) for m in paper.modules())


def test_without_the_compiled_kernel_the_direct_convolution_answers(monkeypatch):
    monkeypatch.setenv("ALEXNET_NATIVE", "0")
    native.load.cache_clear()
    try:
        assert not winograd.enabled()
        model = build_model("alexnet-small", num_classes=10, in_channels=1, input_size=28)
        prepare_for_inference(model, torch.device("cpu"), None, True)
        assert not any(isinstance(m, winograd.WinogradConv2d) for m in model.modules())
    finally:
        native.load.cache_clear()
