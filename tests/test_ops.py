"""Functional ops against direct loop references (NCHW, float64) and finite differences."""
import numpy as np
import pytest

from mpicnn import ops
from mpicnn.ops import conv as conv_ops
from mpicnn.ops import dropout as D
from mpicnn.ops import pool as P

from gradcheck import numeric_grad


def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------- references

def ref_conv(x, w, b, stride, padding, dilation, groups):
    """Direct convolution, NCHW, explicit loops over output positions."""
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Og = O // groups
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    y = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            g = o // Og
            for i in range(Ho):
                for j in range(Wo):
                    acc = 0.0 if b is None else b[o]
                    for c in range(Cg):
                        for ki in range(KH):
                            for kj in range(KW):
                                acc += (xp[n, g * Cg + c, i * sh + ki * dh, j * sw + kj * dw]
                                        * w[o, c, ki, kj])
                    y[n, o, i, j] = acc
    return y


def ref_pool(x, k, s, p, kind):
    """Max (-inf padding) or average (zeros counted) pooling, NCHW, with loops.
    Returns y and, for max, the argmax (first in window order) as padded coordinates."""
    N, C, H, W = x.shape
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=fill)
    Ho, Wo = (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1
    y = np.zeros((N, C, Ho, Wo))
    arg = {}
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    best, where, total = -np.inf, None, 0.0
                    for ki in range(k[0]):
                        for kj in range(k[1]):
                            v = xp[n, c, i * s[0] + ki, j * s[1] + kj]
                            total += v
                            if v > best:
                                best, where = v, (i * s[0] + ki, j * s[1] + kj)
                    y[n, c, i, j] = best if kind == "max" else total / (k[0] * k[1])
                    arg[n, c, i, j] = where
    return y, arg, xp.shape


def ref_pool_backward(dy, x, k, s, p, kind):
    y, arg, pshape = ref_pool(x, k, s, p, kind)
    dxp = np.zeros(pshape)
    N, C, Ho, Wo = dy.shape
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    if kind == "max":
                        dxp[n, c][arg[n, c, i, j]] += dy[n, c, i, j]
                    else:
                        dxp[n, c, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]] += \
                            dy[n, c, i, j] / (k[0] * k[1])
    H, W = x.shape[2:]
    return dxp[:, :, p[0]:p[0] + H, p[1]:p[1] + W]


rng = np.random.default_rng(1234)

# (N, C, H, W, O, (KH, KW), stride, padding, dilation, groups)
CONV_CASES = [
    (2, 3, 7, 9, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # 3x3 pad 1, odd sizes
    (2, 4, 9, 8, 6, (3, 2), (2, 2), (1, 0), (1, 1), 2),      # stride 2, non-square, groups 2
    (2, 4, 11, 10, 4, (3, 3), (1, 1), (2, 2), (2, 2), 4),    # dilation 2, depthwise
    (1, 6, 8, 7, 6, (1, 1), (1, 1), (1, 1), (1, 1), 3),      # 1x1 with padding > kernel extent
    (2, 4, 9, 9, 8, (5, 3), (3, 1), (2, 1), (1, 2), 2),      # mixed strides and dilations
    (3, 5, 6, 6, 5, (3, 3), (1, 1), (0, 0), (1, 1), 1),      # no padding
    (2, 2, 5, 5, 4, (2, 2), (2, 2), (0, 0), (1, 1), 2),      # stride = kernel, grouped
    (2, 3, 6, 5, 2, (4, 4), (1, 1), (1, 2), (1, 1), 1),      # even kernel, asymmetric pad
    (2, 1, 8, 7, 3, (5, 5), (1, 1), (2, 2), (1, 1), 1),      # one input channel (K-major im2col)
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_loops(case):
    N, C, H, W, O, k, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // g) + k)
    b = rng.standard_normal(O)
    want = ref_conv(x, w, b, s, p, d, g)
    got = nchw(ops.conv2d_forward(nhwc(x), w, b, s, p, d, g))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # no bias, and one-sample chunks, give the same
    got = nchw(ops.conv2d_forward(nhwc(x), w, None, s, p, d, g, chunk=1))
    np.testing.assert_allclose(got, ref_conv(x, w, None, s, p, d, g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_backward_matches_finite_differences(case):
    N, C, H, W, O, k, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // g) + k)
    b = rng.standard_normal(O)
    y = ops.conv2d_forward(nhwc(x), w, b, s, p, d, g)
    r = rng.standard_normal(y.shape)  # NHWC weights of the scalar loss sum(y * r)

    def loss():
        return float(np.sum(ops.conv2d_forward(nhwc(x), w, b, s, p, d, g) * r))

    dx, dw, db = ops.conv2d_backward(nhwc(x), w, r, s, p, d, g)
    np.testing.assert_allclose(nchw(dx), numeric_grad(loss, x), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(dw, numeric_grad(loss, w), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(db, numeric_grad(loss, b), rtol=1e-7, atol=1e-7)
    # the parts asked for separately, and with one-sample chunks, are the same
    dx1, dw1, db1 = ops.conv2d_backward(nhwc(x), w, r, s, p, d, g, need_dw=False, chunk=1)
    assert dw1 is None
    np.testing.assert_allclose(dx1, dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db1, db, rtol=1e-12, atol=1e-12)
    dx2, dw2, db2 = ops.conv2d_backward(nhwc(x), w, r, s, p, d, g, need_dx=False, need_db=False)
    assert dx2 is None and db2 is None
    np.testing.assert_allclose(dw2, dw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("H, W, pad", [(6, 6, 1), (7, 5, 1), (5, 6, 0), (6, 7, 2)])
def test_conv_winograd_path_matches_loops(H, W, pad, monkeypatch):
    """3x3 stride-1 convs with enough channels take the Winograd F(2x2,3x3) path, in the
    forward and in the input gradient; odd output sizes crop the last tile."""
    monkeypatch.setenv("MPICNN_NATIVE", "0")  # the native kernels would take these sizes
    monkeypatch.setattr(conv_ops, "WINOGRAD_MIN_CHANNELS", 16)  # small sizes keep the test fast
    monkeypatch.setattr(conv_ops, "WINOGRAD_MIN_PIXELS", 1)
    calls = []
    real = conv_ops._conv3x3_winograd
    monkeypatch.setattr(conv_ops, "_conv3x3_winograd", lambda *a, **k: calls.append(1) or real(*a, **k))
    C, O = 16, 17
    x = rng.standard_normal((2, C, H, W))
    w = rng.standard_normal((O, C, 3, 3))
    b = rng.standard_normal(O)
    y = ops.conv2d_forward(nhwc(x), w, b, 1, pad)
    np.testing.assert_allclose(nchw(y), ref_conv(x, w, b, (1, 1), (pad, pad), (1, 1), 1),
                               rtol=1e-11, atol=1e-11)
    r = rng.standard_normal(y.shape)
    dx, dw, db = ops.conv2d_backward(nhwc(x), w, r, 1, pad)
    assert len(calls) == 2  # forward and input gradient
    dx_ref, dw_ref, db_ref = ops.conv2d_backward(nhwc(x), w, r, 1, pad, chunk=1)  # im2col path
    assert len(calls) == 2
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-11, atol=1e-11)
    assert np.isclose(np.sum(y * r) - np.sum(b * r.sum(axis=(0, 1, 2))), np.sum(nhwc(x) * dx), rtol=1e-12)
    # float32 stays float32 and close to float64
    y32 = ops.conv2d_forward(nhwc(x).astype(np.float32), w.astype(np.float32), b.astype(np.float32), 1, pad)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y, rtol=1e-4, atol=1e-4)


def test_conv_input_grad_paths_agree():
    """stride 1 uses the transposed convolution, stride 2 the col2im scatter: both match
    the adjoint identity <conv(x), r> = <x, conv^T(r)>."""
    for s in (1, 2):
        x = rng.standard_normal((3, 9, 8, 4))
        w = rng.standard_normal((5, 4, 3, 3))
        y = ops.conv2d_forward(x, w, None, s, 1)
        r = rng.standard_normal(y.shape)
        dx, _, _ = ops.conv2d_backward(x, w, r, s, 1, need_dw=False, need_db=False)
        assert np.isclose(np.sum(y * r), np.sum(x * dx), rtol=1e-12)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (3, 0, 1)])
def test_conv_input_grad_taps_path_matches_other_paths(stride, padding, dilation, monkeypatch):
    """Few input channels take the per-tap input gradient; it equals the transposed
    convolution (stride 1) or col2im (other strides) path, and the adjoint identity."""
    monkeypatch.setenv("MPICNN_NATIVE", "0")  # the NumPy paths (test_native_conv.py: the C ones)
    calls = []
    real = conv_ops._input_grad_taps
    monkeypatch.setattr(conv_ops, "_input_grad_taps", lambda *a: calls.append(1) or real(*a))
    x = rng.standard_normal((3, 11, 10, 5))
    w = rng.standard_normal((7, 5, 3, 4))
    y = ops.conv2d_forward(x, w, None, stride, padding, dilation)
    r = rng.standard_normal(y.shape)
    dx, _, _ = ops.conv2d_backward(x, w, r, stride, padding, dilation, need_dw=False, need_db=False)
    assert calls == [1]
    monkeypatch.setattr(conv_ops, "TAPS_MAX_CHANNELS", 0)
    other, _, _ = ops.conv2d_backward(x, w, r, stride, padding, dilation, need_dw=False, need_db=False)
    assert calls == [1]
    np.testing.assert_allclose(dx, other, rtol=1e-12, atol=1e-12)
    assert np.isclose(np.sum(y * r), np.sum(x * dx), rtol=1e-12)


def test_conv_float32_stays_float32():
    x = rng.standard_normal((2, 6, 6, 4)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    y = ops.conv2d_forward(x, w, b, 1, 1)
    dx, dw, db = ops.conv2d_backward(x, w, np.ones_like(y), 1, 1)
    assert {a.dtype for a in (y, dx, dw, db)} == {np.dtype(np.float32)}
    want = ops.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1, 1)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_conv_rejects_bad_input():
    x = np.zeros((1, 5, 5, 3))
    with pytest.raises(ValueError, match="expected 4 input channels, got 3"):
        ops.conv2d_forward(x, np.zeros((2, 4, 3, 3)))
    with pytest.raises(TypeError, match="dtype"):
        ops.conv2d_forward(x.astype(np.float32), np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="too small"):
        ops.conv2d_forward(x, np.zeros((2, 3, 7, 7)))
    with pytest.raises(TypeError, match="'a'"):
        ops.conv2d_forward(x, np.zeros((2, 3, 3, 3)), stride="a")


def test_winograd_is_chosen_for_the_benchmark_conv_only_where_it_pays():
    w = np.zeros((64, 32, 3, 3))
    assert conv_ops._winograd_applies(w.shape, (1, 1), (1, 1), 1, (1, 1), (16, 16))
    assert not conv_ops._winograd_applies(w.shape, (1, 1), (1, 1), 1, (1, 1), (8, 8))
    assert not conv_ops._winograd_applies(w.shape, (2, 2), (1, 1), 1, (1, 1), (16, 16))
    assert not conv_ops._winograd_applies((32, 3, 3, 3), (1, 1), (1, 1), 1, (1, 1), (32, 32))
    assert not conv_ops._winograd_applies((64, 16, 3, 3), (1, 1), (1, 1), 2, (1, 1), (16, 16))


def test_auto_chunk_bounds():
    assert conv_ops.auto_chunk(56, 56, 576, 4) == 1
    assert conv_ops.auto_chunk(1, 1, 1, 4) == conv_ops.MAX_CHUNK
    assert conv_ops.auto_chunk(16, 16, 288, 4) == 8


# ---------------------------------------------------------------------------- pooling

# (N, C, H, W, kernel, stride, padding)
POOL_CASES = [
    (2, 3, 8, 6, (2, 2), (2, 2), (0, 0)),    # tiled fast path
    (2, 3, 9, 7, (2, 2), (2, 2), (0, 0)),    # odd sizes: floor, general path
    (2, 2, 9, 8, (3, 3), (2, 2), (1, 1)),    # overlapping windows with padding
    (1, 3, 7, 9, (2, 3), (1, 2), (1, 1)),    # non-square, stride < kernel
    (2, 2, 6, 9, (3, 3), (3, 3), (0, 0)),    # tiled 3x3
    (1, 2, 5, 5, (1, 1), (2, 2), (0, 0)),    # 1x1 subsampling
]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_loops(case, kind):
    N, C, H, W, k, s, p = case
    x = rng.standard_normal((N, C, H, W))
    want, _, _ = ref_pool(x, k, s, p, kind)
    fwd = P.max_pool2d_forward if kind == "max" else P.avg_pool2d_forward
    y = fwd(nhwc(x), k, s, p)
    np.testing.assert_allclose(nchw(y), want, rtol=1e-13, atol=1e-13)
    dy = rng.standard_normal(want.shape)
    if kind == "max":
        dx = P.max_pool2d_backward(nhwc(dy), nhwc(x), y, k, s, p)
    else:
        dx = P.avg_pool2d_backward(nhwc(dy), nhwc(x).shape, k, s, p)
    np.testing.assert_allclose(nchw(dx), ref_pool_backward(dy, x, k, s, p, kind),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_ties_go_to_first_in_window_order(case):
    N, C, H, W, k, s, p = case
    x = rng.integers(-1, 2, (N, C, H, W)).astype(np.float64)  # many ties
    x[0, 0] = 0.0  # a channel of exact ties everywhere
    y = P.max_pool2d_forward(nhwc(x), k, s, p)
    dy = rng.standard_normal(y.shape)
    dx = nchw(P.max_pool2d_backward(dy, nhwc(x), y, k, s, p))
    want = ref_pool_backward(nchw(dy), x, k, s, p, "max")
    np.testing.assert_array_equal(dx != 0, want != 0)  # same receiving elements
    np.testing.assert_allclose(dx, want, rtol=1e-14, atol=0)  # overlaps add in another order


def test_max_pool_ties_fast_path_is_used_and_exact():
    # the tiled 2x2 path, with a ReLU-like input: most windows are ties at 0
    x = np.maximum(rng.standard_normal((4, 5, 8, 8)) - 1.0, 0)
    y = P.max_pool2d_forward(nhwc(x), 2)
    dy = rng.standard_normal(y.shape)
    dx = P.max_pool2d_backward(dy, nhwc(x), y, 2)
    np.testing.assert_array_equal(nchw(dx), ref_pool_backward(nchw(dy), x, (2, 2), (2, 2), (0, 0), "max"))
    # each output's gradient lands on exactly one input
    assert np.count_nonzero(dx) == np.count_nonzero(dy)


@pytest.mark.parametrize("k", [(2, 2), (3, 3)])
def test_max_pool_backward_repeat_and_broadcast_paths_agree(k, monkeypatch):
    """Tiled max-pool backward repeats y and dy for few channels and broadcasts them for
    many: both give the reference gradient, ties included."""
    x = rng.integers(-1, 2, (3, 4, 6, 12)).astype(np.float64)
    y = P.max_pool2d_forward(nhwc(x), k)
    dy = rng.standard_normal(y.shape)
    want = ref_pool_backward(nchw(dy), x, k, k, (0, 0), "max")
    for limit in (P.REPEAT_MAX_CHANNELS, 0):
        monkeypatch.setattr(P, "REPEAT_MAX_CHANNELS", limit)
        np.testing.assert_array_equal(nchw(P.max_pool2d_backward(dy, nhwc(x), y, k)), want)


def test_pool_rejects_bad_geometry():
    x = np.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="at most half"):
        P.max_pool2d_forward(x, 2, 2, 2)
    with pytest.raises(ValueError, match="too small"):
        P.avg_pool2d_forward(x, 5)
    with pytest.raises(TypeError):
        P.max_pool2d_forward(x.astype(np.int64), 2)


def test_global_pools_match_loops():
    x = rng.standard_normal((3, 4, 5, 6))
    N, C, H, W = x.shape
    dy = rng.standard_normal((N, C))
    xh = nhwc(x)
    # average
    np.testing.assert_allclose(P.global_avg_pool_forward(xh), x.mean(axis=(2, 3)), rtol=1e-13)
    dx = nchw(P.global_avg_pool_backward(dy, xh.shape))
    np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / (H * W), x.shape), rtol=1e-13)
    # max: first maximum in (h, w) order gets the gradient
    x[0, 0] = 1.0
    y, index = P.global_max_pool_forward(nhwc(x))
    np.testing.assert_array_equal(y, x.max(axis=(2, 3)))
    dx = nchw(P.global_max_pool_backward(dy, index, nhwc(x).shape))
    want = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            h, w = np.unravel_index(np.argmax(x[n, c]), (H, W))
            want[n, c, h, w] = dy[n, c]
    np.testing.assert_array_equal(dx, want)
    # rms
    x = rng.standard_normal((3, 4, 5, 6))
    y = P.global_rms_pool_forward(nhwc(x), 1e-3)
    np.testing.assert_allclose(y, np.sqrt((x ** 2).mean(axis=(2, 3)) + 1e-3), rtol=1e-13)
    dx = nchw(P.global_rms_pool_backward(dy, nhwc(x), y))
    want = dy[:, :, None, None] * x / (H * W * y[:, :, None, None])
    np.testing.assert_allclose(dx, want, rtol=1e-12)
    # rms of an all-zero channel with eps=0: gradient 0, not nan
    x[1, 2] = 0
    y = P.global_rms_pool_forward(nhwc(x))
    dx = P.global_rms_pool_backward(dy, nhwc(x), y)
    assert y[1, 2] == 0 and np.all(np.isfinite(dx)) and np.all(nchw(dx)[1, 2] == 0)


# ---------------------------------------------------------------------------- activations

def test_relu_and_leaky_relu():
    x = rng.standard_normal((3, 5, 7, 2)).astype(np.float32)
    x[0, 0, 0, 0] = 0.0
    y = ops.relu_forward(x)
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = ops.relu_backward(dy, y)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0))
    assert y.dtype == dx.dtype == np.float32
    assert dx[0, 0, 0, 0] == 0  # gradient 0 at exactly 0, as PyTorch
    y = ops.leaky_relu_forward(x, 0.2)
    np.testing.assert_allclose(y, np.where(x > 0, x, np.float32(0.2) * x), rtol=0)
    dx = ops.leaky_relu_backward(dy, x, 0.2)
    np.testing.assert_allclose(dx, np.where(x > 0, dy, np.float32(0.2) * dy), rtol=0)
    assert y.dtype == dx.dtype == np.float32
    # sizes that are not multiples of the zero-row length, and a non-contiguous input
    for shape in [(3,), (7, 3), (5, 3, 2, 1)]:
        a = rng.standard_normal(shape)
        np.testing.assert_array_equal(ops.relu_forward(a), np.maximum(a, 0))
    a = rng.standard_normal((6, 8))[:, ::2]
    np.testing.assert_array_equal(ops.relu_forward(a), np.maximum(a, 0))


# ---------------------------------------------------------------------------- loss

def test_cross_entropy_matches_definition_and_finite_differences():
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    loss, probs, correct = ops.cross_entropy_forward(logits, labels)
    want = np.mean([np.log(np.exp(l).sum()) - l[t] for l, t in zip(logits, labels)])
    assert abs(loss - want) < 1e-13
    assert correct == int(np.sum(np.argmax(logits, 1) == labels))
    d = ops.cross_entropy_backward(probs, labels)
    num = numeric_grad(lambda: ops.cross_entropy_forward(logits, labels)[0], logits)
    np.testing.assert_allclose(d, num, rtol=1e-7, atol=1e-9)
    # huge logits stay finite (stable log-softmax)
    big = np.array([[1000.0, 0.0], [0.0, -1000.0]])
    loss, probs, _ = ops.cross_entropy_forward(big, np.array([1, 0]))
    assert np.isfinite(loss) and abs(loss - 500.0) < 1e-9
    # total= divides by the global batch size
    loss2, _, _ = ops.cross_entropy_forward(logits, labels, total=10)
    assert abs(loss2 - want * 5 / 10) < 1e-13
    with pytest.raises(ValueError, match="label 4"):
        ops.cross_entropy_forward(logits, np.array([0, 4, 1, 1, 2]))


# ---------------------------------------------------------------------------- dropout

def _mix64_py(z):
    m = (1 << 64) - 1
    z &= m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def _keep_py(seed, step, n, e, p):
    """The documented hash, in pure Python integers."""
    m = (1 << 64) - 1
    k_step = _mix64_py((seed + D.GOLDEN * (step + 1)) & m)
    k_sample = _mix64_py((k_step + D.GOLDEN * (n + 1)) & m)
    r = _mix64_py((k_sample + D.GOLDEN * (e + 1)) & m)
    return (r >> 11) >= int(p * 2 ** 53)


def test_splitmix64_known_values():
    # splitmix64 seeded with 0: the first output is mix64(GOLDEN) = 0xE220A8397B1DCDAF
    assert D.mix64(D.GOLDEN) == 0xE220A8397B1DCDAF
    a = np.array([D.GOLDEN, 12345], np.uint64)
    np.testing.assert_array_equal(D.mix64(a.copy()), np.array([0xE220A8397B1DCDAF, _mix64_py(12345)], np.uint64))


def test_dropout_mask_follows_the_documented_hash():
    seed, step, offset, p = 987654321987, 17, 40, 0.3
    shape = (3, 4, 5, 6)  # NHWC: N=3, H=4, W=5, C=6
    mask = D.dropout_scale_mask(seed, step, offset, shape, p, np.float64, "NHWC")
    N, H, W, C = shape
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    keep = _keep_py(seed, step, offset + n, (c * H + h) * W + w, p)
                    assert mask[n, h, w, c] == (1 / (1 - p) if keep else 0.0)
    # the NCHW reading of the same tensor gives the same mask, transposed
    m2 = D.dropout_scale_mask(seed, step, offset, (N, C, H, W), p, np.float64, "NCHW")
    np.testing.assert_array_equal(m2, nchw(mask))
    # 2-D: the element index is the feature index
    m3 = D.dropout_scale_mask(seed, step, offset, (2, 7), p, np.float32, "NHWC")
    assert m3.dtype == np.float32
    for n in range(2):
        for f in range(7):
            assert (m3[n, f] != 0) == _keep_py(seed, step, offset + n, f, p)


def test_dropout_rate_and_edges():
    m = D.dropout_scale_mask(1, 2, 0, (64, 1000), 0.25, np.float32)
    kept = np.count_nonzero(m) / m.size
    assert abs(kept - 0.75) < 0.01  # 64000 Bernoulli draws: sd 0.0017
    np.testing.assert_array_equal(np.unique(m), np.array([0, 1 / 0.75], np.float32))
    assert np.all(D.dropout_scale_mask(1, 2, 0, (4, 9), 0.0, np.float64) == 1)
    assert np.all(D.dropout_scale_mask(1, 2, 0, (4, 9), 1.0, np.float64) == 0)
    with pytest.raises(ValueError, match="1.5"):
        D.dropout_threshold(1.5)
    # different steps and seeds give different masks
    a = D.dropout_scale_mask(1, 2, 0, (8, 100), 0.5, np.float64)
    assert not np.array_equal(a, D.dropout_scale_mask(1, 3, 0, (8, 100), 0.5, np.float64))
    assert not np.array_equal(a, D.dropout_scale_mask(2, 2, 0, (8, 100), 0.5, np.float64))


# ---------------------------------------------------------------------------- batch norm

def test_batch_norm_op_matches_formula():
    x = rng.standard_normal((4, 3, 5, 2)) * 3 + 1  # NHWC, C = 2
    w, b = rng.standard_normal(2), rng.standard_normal(2)
    y, cache, mean, var, count = ops.batch_norm_train_forward(x, w, b, 1e-5)
    m = x.mean(axis=(0, 1, 2))
    v = x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(mean, m, rtol=1e-13)
    np.testing.assert_allclose(var, v, rtol=1e-12)
    assert count == 60
    np.testing.assert_allclose(y, (x - m) / np.sqrt(v + 1e-5) * w + b, rtol=1e-12, atol=1e-12)
    r = rng.standard_normal(x.shape)
    dx, dw, db = ops.batch_norm_backward(r, cache)
    loss = lambda: float(np.sum(ops.batch_norm_train_forward(x, w, b, 1e-5)[0] * r))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, numeric_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, numeric_grad(loss, b), rtol=1e-6, atol=1e-7)
    # eval mode with given statistics
    rm, rv = rng.standard_normal(2), rng.random(2) + 0.5
    y, cache = ops.batch_norm_eval_forward(x, w, b, rm, rv, 1e-5)
    np.testing.assert_allclose(y, (x - rm) / np.sqrt(rv + 1e-5) * w + b, rtol=1e-12, atol=1e-12)
    loss = lambda: float(np.sum(ops.batch_norm_eval_forward(x, w, b, rm, rv, 1e-5)[0] * r))  # noqa: E731
    dx, dw, db = ops.batch_norm_backward(r, cache)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, numeric_grad(loss, w), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("h, w_, k, p, d", [(2, 2, 3, 1, 1), (4, 4, 3, 1, 1), (3, 2, 3, 1, 1), (4, 3, 5, 1, 1),
                                           (4, 4, 3, 2, 2), (1, 1, 3, 1, 1)])
def test_small_map_taps_path_matches_im2col(h, w_, k, p, d, monkeypatch):
    """Wide layers on maps of a few pixels run per kernel tap, skipping taps that read only
    padding; forward, input and weight gradients equal the im2col path's."""
    monkeypatch.setattr(conv_ops, "SMALL_MAP_MIN_CHANNELS", 4)  # small channels keep it fast
    calls = []
    real = conv_ops._tap_windows
    monkeypatch.setattr(conv_ops, "_tap_windows", lambda *a: calls.append(1) or real(*a))
    x = rng.standard_normal((3, h, w_, 5))
    w = rng.standard_normal((6, 5, k, k))
    b = rng.standard_normal(6)
    y = ops.conv2d_forward(x, w, b, 1, p, d)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = ops.conv2d_backward(x, w, dy, 1, p, d)
    assert len(calls) == 3  # forward, weight and input gradients took the taps path
    y_ref = ops.conv2d_forward(x, w, b, 1, p, d, chunk=1)
    dx_ref, dw_ref, db_ref = ops.conv2d_backward(x, w, dy, 1, p, d, chunk=1)
    assert len(calls) == 3
    for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
