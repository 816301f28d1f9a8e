"""docs/from-tensorflow.md, checked: every mapping in it that is arithmetic. TensorFlow's
formulas, as its documentation states them, are written out in NumPy and compared with what
the package or PyTorch computes: LRN's parameters (and the Caffe-ported ones that are not the
paper's), dropout's keep probability and its scaling, 'SAME' and 'VALID' padding, NHWC against
NCHW (a convolution, the two towers, fc6's flattening), the sparse softmax cross-entropy,
``tf.nn.l2_loss`` and ``MomentumOptimizer``, and the TensorBoard tags a run writes.

Where TensorFlow is installed the same checks run against TensorFlow itself (the ``tf``
tests); elsewhere they skip, saying so. TensorFlow is no dependency of the package."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.models.blocks import LRN_PAPER
from alexnet.ops.lrn import LocalResponseNorm

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "from-tensorflow.md").read_text()
PAPER_K, PAPER_N = LRN_PAPER["k"], LRN_PAPER["size"]
PAPER_ALPHA, PAPER_BETA = LRN_PAPER["alpha"], LRN_PAPER["beta"]
# The paper's LRN as tf.nn.lrn takes it: depth_radius = n // 2, bias = k, alpha as printed.
PAPER_TF = {"depth_radius": PAPER_N // 2, "bias": PAPER_K, "alpha": PAPER_ALPHA, "beta": PAPER_BETA}
# What TensorFlow AlexNets that load Caffe's converted weights write: Caffe's k = 1 and its
# alpha / n = 1e-4 / 5, as tf.nn.lrn takes them.
CAFFE_PORTED = {"depth_radius": 2, "bias": 1.0, "alpha": 2e-5, "beta": 0.75}


def nchw(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2)


def nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1)


# ---- TensorFlow's formulas, in NumPy, on NHWC arrays as TensorFlow takes them ----


def tf_lrn(x, depth_radius, bias, alpha, beta):
    """tf.nn.lrn: sqr_sum[a, b, c, d] = sum(input[a, b, c, d - r : d + r + 1] ** 2),
    output = input / (bias + alpha * sqr_sum) ** beta, over the last (channel) axis."""
    squares = x**2
    sqr_sum = np.stack([squares[..., max(0, d - depth_radius) : d + depth_radius + 1].sum(-1)
                        for d in range(x.shape[-1])], axis=-1)  # fmt: skip
    return x / (bias + alpha * sqr_sum) ** beta


def tf_output_and_pads(size, kernel, stride, padding):
    """TensorFlow's output size and (before, after) zero padding along one axis."""
    if padding == "VALID":
        return math.ceil((size - kernel + 1) / stride), (0, 0)
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, (total // 2, total - total // 2)  # the odd pixel after: bottom, right


def tf_conv2d(x, w, stride, padding):
    """tf.nn.conv2d, NHWC input and [height, width, in, out] filter:
    output[b, i, j, k] = sum_{di, dj, q} input[b, S*i + di, S*j + dj, q] * filter[di, dj, q, k]
    on the input padded as ``padding`` says."""
    _, (top, bottom) = tf_output_and_pads(x.shape[1], w.shape[0], stride, padding)
    _, (left, right) = tf_output_and_pads(x.shape[2], w.shape[1], stride, padding)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, w.shape[:2], axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # (N, out_h, out_w, in, kh, kw)
    return np.einsum("nijqhw,hwqk->nijk", windows, w)


def tf_max_pool(x, window, stride, padding):
    """tf.nn.max_pool: the padded positions take no part in the maximum."""
    _, (top, bottom) = tf_output_and_pads(x.shape[1], window, stride, padding)
    _, (left, right) = tf_output_and_pads(x.shape[2], window, stride, padding)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (window, window), axis=(1, 2))
    return windows[:, ::stride, ::stride].max(axis=(-2, -1))


def tf_sparse_softmax_cross_entropy(labels, logits):
    """One loss per example: log(sum_c exp(z_c)) - z_label, computed stably."""
    top = logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return log_sum - logits[np.arange(len(labels)), labels]


def tf_softmax_cross_entropy_smoothed(onehot, logits, label_smoothing):
    """tf.losses.softmax_cross_entropy: onehot * (1 - s) + s / num_classes, then the mean."""
    targets = onehot * (1 - label_smoothing) + label_smoothing / onehot.shape[1]
    top = logits.max(axis=1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return -(targets * log_probs).sum(axis=1).mean()


def tf_dropout(x, keep_prob, mask):
    """tf.nn.dropout(x, keep_prob): the kept elements scaled up by 1 / keep_prob, the others 0."""
    return x * mask / keep_prob


def tf_momentum_steps(w, grads, rates, momentum):
    """tf.train.MomentumOptimizer: accumulation = momentum * accumulation + gradient;
    variable -= learning_rate * accumulation."""
    accumulation = np.zeros_like(w)
    for grad, rate in zip(grads, rates, strict=True):
        accumulation = momentum * accumulation + grad
        w = w - rate * accumulation
    return w


@pytest.fixture
def rng():
    return np.random.default_rng(2012)


def activities(rng, shape=(2, 7, 9, 16), scale=60.0):
    """ReLU outputs, NHWC, large enough for LRN's alpha term to matter (as at the paper's
    raw-pixel scale), in float64."""
    return np.maximum(rng.normal(0.0, scale, shape), 0.0)


# ---- LRN ----


def test_tf_lrn_with_the_papers_constants_is_the_packages_paper_formula(rng):
    x = activities(rng)
    assert PAPER_TF == {"depth_radius": 2, "bias": 2.0, "alpha": 1e-4, "beta": 0.75}
    tf_paper = tf_lrn(x, **PAPER_TF)
    package = LocalResponseNorm(**LRN_PAPER, formula="paper")(torch.from_numpy(nchw(x)))
    np.testing.assert_allclose(nhwc(package.numpy()), tf_paper, rtol=1e-10)
    # torch divides alpha by the window size: the paper's formula needs alpha * n there.
    torch_times_n = nn.LocalResponseNorm(PAPER_N, PAPER_ALPHA * PAPER_N, PAPER_BETA, PAPER_K)
    np.testing.assert_allclose(nhwc(torch_times_n(torch.from_numpy(nchw(x))).numpy()), tf_paper,
                               rtol=1e-10)  # fmt: skip
    # The same numbers given to torch unchanged normalise n times more weakly.
    torch_as_is = nn.LocalResponseNorm(PAPER_N, PAPER_ALPHA, PAPER_BETA, PAPER_K)
    weaker = nhwc(torch_as_is(torch.from_numpy(nchw(x))).numpy())
    assert not np.allclose(weaker, tf_paper, rtol=1e-3)
    assert (weaker >= tf_paper).all() and (weaker > 1.05 * tf_paper).any()


def test_tf_lrn_window_is_two_depth_radius_plus_one_channels_cut_at_the_edges():
    x = np.zeros((1, 1, 1, 9))
    x[..., 4] = 100.0  # one loud channel; which outputs does it reach?
    reached, quiet = tf_lrn(x + 1.0, **PAPER_TF), tf_lrn(np.ones_like(x), **PAPER_TF)
    assert list(np.flatnonzero(~np.isclose(reached, quiet)[0, 0, 0])) == [2, 3, 4, 5, 6]
    # At the edge the window holds three channels (0, 1, 2), not five.
    ones = tf_lrn(np.ones((1, 1, 1, 9)), depth_radius=2, bias=0.0, alpha=1.0, beta=1.0)
    np.testing.assert_allclose(
        ones[0, 0, 0], [1 / 3, 1 / 4, 1 / 5, 1 / 5, 1 / 5, 1 / 5, 1 / 5, 1 / 4, 1 / 3]
    )


def test_the_caffe_ported_tf_lrn_is_caffes_convention_not_the_papers(rng):
    x = activities(rng)
    ported = tf_lrn(x, **CAFFE_PORTED)
    # It is Caffe's (and torch's) layer with k = 1, alpha = 1e-4 divided by n = 5 ...
    caffe = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)(torch.from_numpy(nchw(x)))
    np.testing.assert_allclose(nhwc(caffe.numpy()), ported, rtol=1e-10)
    package_torch = LocalResponseNorm(5, 1e-4, 0.75, 1.0, formula="torch")(
        torch.from_numpy(nchw(x))
    )
    np.testing.assert_allclose(nhwc(package_torch.numpy()), ported, rtol=1e-10)
    # ... and not the paper's: small activities come out 2^0.75 = 1.68 times larger ...
    assert not np.allclose(ported, tf_lrn(x, **PAPER_TF), rtol=0.1)
    small = activities(rng, scale=1.0)  # alpha times the window's sum is tiny next to k
    np.testing.assert_allclose(tf_lrn(small, **CAFFE_PORTED), tf_lrn(small, **PAPER_TF) * 2**0.75,
                               rtol=5e-3)  # fmt: skip
    # ... and one loud channel among silent ones, as docs/from-tensorflow.md works it out.
    loud = np.zeros((1, 1, 1, 5))
    loud[..., 2] = 100.0
    assert round(tf_lrn(loud, **PAPER_TF)[0, 0, 0, 2], 2) == 43.87
    assert round(tf_lrn(loud, **CAFFE_PORTED)[0, 0, 0, 2], 2) == 87.22
    assert "43.87" in PAGE and "87.22" in PAGE and "alpha=2e-5" in PAGE


# ---- Dropout ----


@pytest.mark.parametrize("keep_prob", [0.5, 0.8])
def test_keep_prob_is_one_minus_torchs_p_and_both_scale_by_one_over_keep_prob(keep_prob):
    rate = 1 - keep_prob  # the course's 1 = keep_prob + rate
    x = torch.rand(200_000, dtype=torch.float64) + 0.5
    torch.manual_seed(0)
    drop = nn.Dropout(p=rate).train()
    out = drop(x)
    kept = out != 0
    torch.testing.assert_close(out, tf_dropout(x, keep_prob, kept))  # with torch's own mask
    assert abs(kept.double().mean().item() - keep_prob) < 0.005
    assert abs(out.mean().item() / x.mean().item() - 1) < 0.01  # the expected sum is unchanged
    # At test time TF 1.x code feeds keep_prob = 1.0; torch's eval() does the same: nothing.
    assert torch.equal(drop.eval()(x), tf_dropout(x, 1.0, torch.ones_like(x)))


def test_dropout_p_given_the_keep_probability_drops_the_wrong_share():
    torch.manual_seed(0)
    out = nn.Dropout(p=0.8).train()(torch.ones(100_000))  # meant: keep 0.8
    assert abs((out == 0).float().mean().item() - 0.8) < 0.01
    assert set(out.unique().tolist()) == {0.0, 5.0}  # survivors times 1 / 0.2


def test_functional_dropout_drops_unless_told_the_mode():
    x = torch.ones(10_000)
    assert (F.dropout(x, 0.5) == 0).any()  # training=True unless passed
    assert torch.equal(F.dropout(x, 0.5, training=False), x)


# ---- Padding ----


@pytest.mark.parametrize(("size", "padding", "out", "pads"), [
    (227, "VALID", 55, (0, 0)), (227, "SAME", 57, (4, 4)),
    (224, "VALID", 54, (0, 0)), (224, "SAME", 56, (3, 4)),
])  # fmt: skip
def test_conv1_same_and_valid_against_torch_with_an_explicit_pad(rng, size, padding, out, pads):
    assert tf_output_and_pads(size, 11, 4, padding) == (out, pads)
    x = rng.normal(size=(1, size, size, 3))
    w = rng.normal(size=(11, 11, 3, 2))  # conv1's 11x11x3 kernels, two of them
    by_tf = tf_conv2d(x, w, 4, padding)
    before, after = pads
    padded = F.pad(torch.from_numpy(nchw(x)), (before, after, before, after))
    by_torch = F.conv2d(padded, torch.from_numpy(w.transpose(3, 2, 0, 1)), stride=4)
    assert by_tf.shape == (1, out, out, 2)
    np.testing.assert_allclose(nhwc(by_torch.numpy()), by_tf, rtol=1e-9, atol=1e-9)
    assert f"| {size} | `{padding}` | {out} |" in PAGE  # the worked example's table


def test_same_at_224_is_no_symmetric_padding(rng):
    x = rng.normal(size=(1, 224, 224, 3))
    w = rng.normal(size=(11, 11, 3, 2))
    by_tf = tf_conv2d(x, w, 4, "SAME")  # 56 x 56, 3 pixels before and 4 after
    weight = torch.from_numpy(w.transpose(3, 2, 0, 1))
    three = F.conv2d(torch.from_numpy(nchw(x)), weight, stride=4, padding=3)
    four = F.conv2d(torch.from_numpy(nchw(x)), weight, stride=4, padding=4)
    assert three.shape[-1] == 55 and four.shape[-1] == 56
    assert not np.allclose(nhwc(four.numpy()), by_tf)  # every window one pixel off
    # 'VALID' at 227 is notebook 02's (W - F + 2P) / S + 1 with P = 0: Figure 2's 55 x 55.
    assert tf_output_and_pads(227, 11, 4, "VALID")[0] == (227 - 11 + 2 * 0) // 4 + 1 == 55


@pytest.mark.parametrize(("size", "kernel"), [(27, 5), (13, 3)])
def test_same_at_stride_one_with_an_odd_kernel_is_paddings_half_the_kernel(rng, size, kernel):
    """conv2 (5x5, padding 2) and conv3-conv5 (3x3, padding 1) are TensorFlow's 'SAME'."""
    assert tf_output_and_pads(size, kernel, 1, "SAME") == (size, (kernel // 2, kernel // 2))
    x = rng.normal(size=(1, size, size, 4))
    w = rng.normal(size=(kernel, kernel, 4, 3))
    by_torch = F.conv2d(torch.from_numpy(nchw(x)), torch.from_numpy(w.transpose(3, 2, 0, 1)),
                        padding=kernel // 2)  # fmt: skip
    np.testing.assert_allclose(
        nhwc(by_torch.numpy()), tf_conv2d(x, w, 1, "SAME"), rtol=1e-9, atol=1e-9
    )


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_torchs_padding_same_is_tfs_at_stride_one_and_refused_with_a_stride(rng):
    x = rng.normal(size=(1, 8, 8, 2))
    w = rng.normal(size=(4, 4, 2, 3))  # an even kernel: 3 pixels of padding, 1 before, 2 after
    weight = torch.from_numpy(w.transpose(3, 2, 0, 1))
    same = F.conv2d(torch.from_numpy(nchw(x)), weight, padding="same")
    np.testing.assert_allclose(nhwc(same.numpy()), tf_conv2d(x, w, 1, "SAME"), rtol=1e-9, atol=1e-9)
    with pytest.raises(RuntimeError, match="stride"):
        F.conv2d(torch.from_numpy(nchw(x)), weight, padding="same", stride=2)


@pytest.mark.parametrize(("size", "valid", "same"), [(55, 27, 28), (27, 13, 14), (13, 6, 7)])
def test_pooling_valid_keeps_the_papers_sizes_and_same_does_not(rng, size, valid, same):
    x = rng.normal(size=(1, size, size, 3))
    for padding, expected in (("VALID", valid), ("SAME", same)):
        by_tf = tf_max_pool(x, 3, 2, padding)
        before, after = tf_output_and_pads(size, 3, 2, padding)[1]
        padded = F.pad(torch.from_numpy(nchw(x)), (before, after, before, after), value=-math.inf)
        by_torch = F.max_pool2d(padded, 3, 2)
        assert by_tf.shape[1] == expected
        np.testing.assert_array_equal(nhwc(by_torch.numpy()), by_tf)
    np.testing.assert_array_equal(nhwc(nn.MaxPool2d(3, 2)(torch.from_numpy(nchw(x))).numpy()),
                                  tf_max_pool(x, 3, 2, "VALID"))  # fmt: skip


# ---- NHWC against NCHW ----


def test_nhwc_convolution_is_nchw_with_the_axes_moved(rng):
    x = rng.normal(size=(2, 13, 13, 6))  # NHWC, as TensorFlow feeds it
    w = rng.normal(size=(3, 3, 6, 4))  # [height, width, in, out]
    by_tf = tf_conv2d(x, w, 1, "SAME")
    by_torch = F.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                        torch.from_numpy(w.transpose(3, 2, 0, 1)), padding=1)  # fmt: skip
    np.testing.assert_allclose(by_torch.numpy().transpose(0, 2, 3, 1), by_tf, rtol=1e-9, atol=1e-9)
    # Moving the axes is needed: the same numbers read as NCHW are another image.
    assert not np.allclose(x.reshape(2, 6, 13, 13), x.transpose(0, 3, 1, 2))


def test_two_towers_split_and_concatenated_in_nhwc_are_a_grouped_convolution(rng):
    x = rng.normal(size=(1, 27, 27, 8))
    w = rng.normal(size=(5, 5, 4, 6))  # each kernel sees half the input channels
    towers = zip(np.split(x, 2, axis=3), np.split(w, 2, axis=3), strict=True)  # tf.split, axis 3
    by_tf = np.concatenate(
        [tf_conv2d(part, kernels, 1, "SAME") for part, kernels in towers], axis=3
    )
    grouped = F.conv2d(torch.from_numpy(nchw(x)), torch.from_numpy(w.transpose(3, 2, 0, 1)),
                       padding=2, groups=2)  # fmt: skip
    np.testing.assert_allclose(nhwc(grouped.numpy()), by_tf, rtol=1e-9, atol=1e-9)


def test_fc6_weights_from_tensorflow_need_their_rows_reordered(rng):
    pool5 = rng.normal(size=(2, 6, 6, 256))  # NHWC
    w_tf = rng.normal(size=(6 * 6 * 256, 10))  # tf.matmul(x, W): [inputs, outputs]
    by_tf = pool5.reshape(2, -1) @ w_tf  # tf.reshape flattens h, w, c
    flat = torch.flatten(torch.from_numpy(nchw(pool5)), 1)  # torch.flatten: c, h, w
    reordered = w_tf.reshape(6, 6, 256, 10).transpose(3, 2, 0, 1).reshape(10, -1)
    np.testing.assert_allclose(
        F.linear(flat, torch.from_numpy(reordered)).numpy(), by_tf, rtol=1e-9
    )
    transposed_only = F.linear(flat, torch.from_numpy(np.ascontiguousarray(w_tf.T)))
    assert not np.allclose(transposed_only.numpy(), by_tf, rtol=1e-3)
    assert "reshape(6, 6, 256, 4096).transpose(3, 2, 0, 1).reshape(4096, 9216)" in PAGE


# ---- The loss ----


def tf_extract_image_patches(x, k, stride):
    """``tf.extract_image_patches`` with 'VALID' padding and no dilation, as documented: an
    NHWC batch gives [N, rows, cols, k * k * C], each patch laid out by (height, width, channel)."""
    n, h, w, c = x.shape
    rows, cols = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.empty((n, rows, cols, k * k * c), x.dtype)
    for i in range(rows):
        for j in range(cols):
            patch = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j] = patch.reshape(n, -1)
    return out


def test_extract_image_patches_is_unfold_with_the_axes_moved(rng):
    """The page's row for ``F.unfold``: the same windows, unfold's as [N, C * k * k, positions]
    by (channel, height, width)."""
    x = rng.standard_normal((2, 9, 11, 3)).astype(np.float32)
    k, stride = 3, 2
    tf_patches = tf_extract_image_patches(x, k, stride)
    n, rows, cols, _ = tf_patches.shape
    unfolded = F.unfold(torch.from_numpy(nchw(x).copy()), k, stride=stride).numpy()
    as_tf = unfolded.reshape(n, 3, k, k, rows, cols).transpose(0, 4, 5, 2, 3, 1)
    np.testing.assert_array_equal(as_tf.reshape(n, rows, cols, -1), tf_patches)
    assert "F.unfold" in PAGE and "tf.extract_image_patches" in PAGE


def test_sparse_softmax_cross_entropy_and_its_mean_are_torchs_cross_entropy(rng):
    logits = rng.normal(0, 5, size=(16, 10))
    labels = rng.integers(0, 10, size=16)
    per_example = tf_sparse_softmax_cross_entropy(labels, logits)
    z, y = torch.from_numpy(logits), torch.from_numpy(labels)
    np.testing.assert_allclose(
        F.cross_entropy(z, y, reduction="none").numpy(), per_example, rtol=1e-12
    )
    assert math.isclose(
        F.cross_entropy(z, y).item(), per_example.mean(), rel_tol=1e-12
    )  # tf.reduce_mean
    assert math.isclose(
        F.cross_entropy(z, y, reduction="sum").item(), per_example.sum(), rel_tol=1e-12
    )
    # Dense one-hot labels (softmax_cross_entropy_with_logits) are torch's probability targets.
    onehot = np.eye(10)[labels]
    assert math.isclose(F.cross_entropy(z, torch.from_numpy(onehot)).item(), per_example.mean(),
                        rel_tol=1e-12)  # fmt: skip
    # A softmax before the loss (probabilities given as logits) is a different loss.
    probs = torch.softmax(z, dim=1)
    assert not math.isclose(F.cross_entropy(probs, y).item(), per_example.mean(), rel_tol=1e-2)


def test_label_smoothing_is_the_same_formula(rng):
    logits = rng.normal(0, 3, size=(32, 10))
    labels = rng.integers(0, 10, size=32)
    by_tf = tf_softmax_cross_entropy_smoothed(np.eye(10)[labels], logits, 0.1)
    by_torch = F.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(labels), label_smoothing=0.1
    )
    assert math.isclose(by_torch.item(), by_tf, rel_tol=1e-12)


def test_in_top_k_is_topk_against_the_labels(rng):
    logits = rng.normal(size=(64, 10))  # no ties, where in_top_k and topk could differ
    labels = rng.integers(0, 10, size=64)
    by_tf = (logits > logits[np.arange(64), labels][:, None]).sum(1) < 5  # fewer than k above
    top5 = torch.from_numpy(logits).topk(5, dim=1).indices
    by_torch = (top5 == torch.from_numpy(labels)[:, None]).any(dim=1)
    np.testing.assert_array_equal(by_torch.numpy(), by_tf)


# ---- Weight decay and momentum ----


def test_l2_loss_times_the_decay_is_sgds_weight_decay(rng):
    w0, grad = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    decay, rate = 5e-4, 0.01
    # tf.nn.l2_loss(w) = sum(w ** 2) / 2: its gradient times the decay is decay * w.
    w = torch.tensor(w0, requires_grad=True)
    (decay * w.pow(2).sum() / 2 + (w * torch.from_numpy(grad)).sum()).backward()
    with_l2_loss = w0 - rate * w.grad.numpy()
    p = nn.Parameter(torch.tensor(w0))
    p.grad = torch.from_numpy(grad.copy())
    torch.optim.SGD([p], lr=rate, weight_decay=decay).step()
    np.testing.assert_allclose(p.detach().numpy(), with_l2_loss, rtol=1e-12)
    assert np.allclose(w.grad.numpy() - grad, decay * w0)


def test_momentum_optimizer_is_torchs_sgd_and_the_papers_rule_only_at_a_constant_rate(rng):
    from alexnet.training.schedules import VelocitySGD

    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(6)]
    rates = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]  # the paper's division by 10 after three steps
    results = {}
    for name, kind in (("torch", torch.optim.SGD), ("paper", VelocitySGD)):
        p = nn.Parameter(torch.tensor(w0))
        opt = kind([p], lr=rates[0], momentum=0.9)
        for step, (grad, rate) in enumerate(zip(grads, rates, strict=True)):
            opt.param_groups[0]["lr"] = rate
            p.grad = torch.from_numpy(grad.copy())
            opt.step()
            if step == 2:
                results[f"{name} before the division"] = p.detach().numpy().copy()
        results[name] = p.detach().numpy()
    tf_before = tf_momentum_steps(w0, grads[:3], rates[:3], 0.9)
    np.testing.assert_allclose(results["torch before the division"], tf_before, rtol=1e-12)
    np.testing.assert_allclose(results["paper before the division"], tf_before, rtol=1e-12)
    tf_after = tf_momentum_steps(w0, grads, rates, 0.9)
    np.testing.assert_allclose(results["torch"], tf_after, rtol=1e-12)
    assert not np.allclose(results["paper"], tf_after, rtol=1e-3)


# ---- TensorBoard ----


def test_a_run_writes_the_tensorboard_tags_the_page_names(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from alexnet.training.logger import SCALARS, RunLogger
    from alexnet.training.train import conv1_image

    logger = RunLogger(tmp_path, main=True, progress=False)
    metrics = {key: 0.5 for key in SCALARS} | {"epoch": 1, "epoch_seconds": 1.0}
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2))
    logger.epoch(metrics, conv1_image(net))
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()
    named = ["train/loss", "train/top1_err", "train/top5_err", "val/loss", "val/top1_err",
             "val/top5_err", "lr", "images_per_s"]  # fmt: skip
    assert sorted(tags["scalars"]) == sorted(named)
    assert tags["images"] == ["conv1_kernels"]
    assert all(f"`{tag}`" in PAGE for tag in [*named, "conv1_kernels"])
    assert [e.step for e in events.Scalars("val/top1_err")] == [1]  # one point per epoch


# ---- The same checks against TensorFlow itself, where it is installed ----


@pytest.fixture
def tf():
    return pytest.importorskip(
        "tensorflow", reason="TensorFlow is not installed: its own numbers are checked where it is"
    )


def test_tf_lrn_itself(tf, rng):
    x = activities(rng).astype(np.float32)
    for params in (PAPER_TF, CAFFE_PORTED):
        expected = tf_lrn(x.astype(np.float64), **params)
        np.testing.assert_allclose(tf.nn.lrn(x, **params).numpy(), expected, rtol=1e-5)
    package = LocalResponseNorm(**LRN_PAPER, formula="paper")(
        torch.from_numpy(nchw(x).astype(np.float64))
    )
    np.testing.assert_allclose(tf.nn.lrn(x, **PAPER_TF).numpy(),
                               nhwc(package.numpy()), rtol=1e-5)  # fmt: skip


def test_tf_dropout_itself(tf):
    x = np.ones(100_000, dtype=np.float32)
    for out in (tf.compat.v1.nn.dropout(x, keep_prob=0.8), tf.nn.dropout(x, rate=0.2)):
        values = out.numpy()
        np.testing.assert_allclose(np.unique(values), [0.0, 1.25], rtol=1e-6)
        assert abs((values == 0).mean() - 0.2) < 0.01


def test_tf_padding_and_layout_itself(tf, rng):
    for size, padding in ((227, "VALID"), (227, "SAME"), (224, "VALID"), (224, "SAME")):
        x = rng.normal(size=(1, size, size, 3)).astype(np.float32)
        w = rng.normal(size=(11, 11, 3, 2)).astype(np.float32)
        by_tf = tf.nn.conv2d(x, w, strides=[1, 4, 4, 1], padding=padding).numpy()
        expected = tf_conv2d(x.astype(np.float64), w.astype(np.float64), 4, padding)
        np.testing.assert_allclose(by_tf, expected, rtol=1e-4, atol=1e-3)
        before, after = tf_output_and_pads(size, 11, 4, padding)[1]
        padded = F.pad(torch.from_numpy(nchw(x).copy()), (before, after, before, after))
        by_torch = F.conv2d(padded, torch.from_numpy(w.transpose(3, 2, 0, 1).copy()), stride=4)
        np.testing.assert_allclose(by_tf, nhwc(by_torch.numpy()), rtol=1e-4, atol=1e-3)
    x = rng.normal(size=(1, 55, 55, 3)).astype(np.float32)
    for padding in ("VALID", "SAME"):
        pooled = tf.nn.max_pool2d(x, ksize=3, strides=2, padding=padding).numpy()
        np.testing.assert_array_equal(pooled, tf_max_pool(x, 3, 2, padding))


def test_tf_losses_itself(tf, rng):
    logits = rng.normal(0, 5, size=(16, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=16)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits
    ).numpy()
    z, y = torch.from_numpy(logits), torch.from_numpy(labels)
    np.testing.assert_allclose(
        per_example, F.cross_entropy(z, y, reduction="none").numpy(), rtol=1e-5
    )
    smoothed = tf.keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    by_torch = F.cross_entropy(z, y, label_smoothing=0.1).item()
    assert math.isclose(float(smoothed(np.eye(10, dtype=np.float32)[labels], logits)), by_torch,
                        rel_tol=1e-5)  # fmt: skip
    in_top5 = tf.math.in_top_k(targets=labels, predictions=logits, k=5).numpy()
    np.testing.assert_array_equal(
        in_top5, (z.topk(5, dim=1).indices == y[:, None]).any(dim=1).numpy()
    )
    w = rng.normal(size=(5, 4)).astype(np.float32)
    assert math.isclose(
        float(tf.nn.l2_loss(w)), float((w.astype(np.float64) ** 2).sum() / 2), rel_tol=1e-5
    )
