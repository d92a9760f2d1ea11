"""The native C kernels (mpicnn/ops/native/native.c) against the NumPy code of ops/conv.py
and ops/norm.py, and the dispatch between them."""
import os

import numpy as np
import pytest

from mpicnn import ops
from mpicnn.ops import conv as conv_ops
from mpicnn.ops import native, norm

rng = np.random.default_rng(7)

pytestmark = pytest.mark.skipif(
    not native.available() and os.environ.get("CI") != "true",
    reason=f"native kernels unavailable: {native.why_unavailable()}")


def test_built_under_ci():
    """CI installs with a C compiler: the kernels must have been built and load."""
    assert native.available(), native.why_unavailable()
    assert os.path.basename(native.library_path()).startswith("_native_")


# N, C, H, W, O, K, stride, padding, dilation: channel counts below, at and above one
# vector (16 float32 / 8 float64 lanes), pixel rows shorter and longer than a register
# tile, floor-mode outputs that leave input rows unread, non-square kernels via K.
SHAPES = [
    (2, 3, 9, 7, 16, 3, 1, 1, 1), (3, 16, 10, 10, 16, 3, 1, 1, 1), (2, 5, 11, 13, 6, 5, 1, 2, 1),
    (2, 6, 14, 14, 16, 5, 1, 0, 1), (2, 16, 12, 12, 32, 3, 2, 1, 1), (2, 32, 8, 8, 64, 3, 1, 1, 1),
    (1, 40, 7, 9, 33, 3, 2, 1, 1), (2, 8, 9, 9, 20, 1, 2, 0, 1), (2, 7, 12, 12, 9, 3, 1, 2, 2),
    (2, 64, 4, 4, 128, 3, 1, 1, 1), (2, 17, 9, 8, 100, 2, 3, 0, 1), (1, 1, 28, 28, 6, 5, 1, 2, 1),
    (2, 4, 30, 5, 70, 3, 1, 1, 1),
    # few outputs over whole vectors of inputs (conv_fwd_reduce: forward, and the input
    # gradient of 6 <- 16 above); 1-3 inputs with few outputs (conv_dw_rows), rows of
    # output pixels shorter than, equal to and longer than a vector
    (2, 16, 9, 11, 4, 3, 2, 1, 1), (2, 32, 8, 7, 3, 3, 1, 2, 2), (2, 16, 6, 6, 1, 1, 1, 0, 1),
    (2, 2, 10, 19, 5, 3, 1, 1, 1), (2, 3, 5, 16, 7, 1, 1, 0, 1), (1, 1, 8, 40, 2, 3, 1, 0, 3),
    # 1-3 inputs, 3 kernel columns, whole vectors of outputs (conv_dw_taps)
    (2, 2, 9, 9, 32, 3, 2, 1, 1), (2, 1, 12, 10, 48, 3, 1, 1, 1),
    # stride with dilation: the input gradient's scatter (conv_dx)
    (2, 6, 11, 11, 10, 3, 2, 2, 2),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_native_matches_numpy(shape, dtype):
    n, c, h, w_, o, k, s, p, d = shape
    x = rng.standard_normal((n, h, w_, c)).astype(dtype)
    w = rng.standard_normal((o, c, k, k)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    Ho, Wo = conv_ops.conv_output_size(h, k, s, p, d), conv_ops.conv_output_size(w_, k, s, p, d)
    dy = rng.standard_normal((n, Ho, Wo, o)).astype(dtype)
    # chunk=... forces the NumPy im2col code
    y_ref = ops.conv2d_forward(x, w, b, s, p, d, chunk=2)
    dx_ref, dw_ref, _ = ops.conv2d_backward(x, w, dy, s, p, d, chunk=2)
    y = native.forward(x, w, b, (s, s), (p, p), (d, d), Ho, Wo)
    dx = native.input_grad(dy, w, x.shape, (s, s), (p, p), (d, d))
    dw = native.weight_grad(x, dy, w.shape, (s, s), (p, p), (d, d))
    assert y.dtype == dx.dtype == dw.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())
    # the adjoint identity <conv(x), dy> = <x, conv^T(dy)> holds for the native pair alone
    y0 = native.forward(x, w, None, (s, s), (p, p), (d, d), Ho, Wo)
    assert np.isclose(np.sum(y0 * dy, dtype=np.float64), np.sum(x * dx, dtype=np.float64),
                      rtol=1e-10 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_no_input_channels_gives_the_bias(dtype):
    """A channel split can leave a rank no input channels (3 channels over 2 ranks with
    an empty block): its partial convolution is the bias alone, and its gradients empty."""
    x = rng.standard_normal((2, 6, 5, 0)).astype(dtype)
    w = rng.standard_normal((20, 0, 3, 3)).astype(dtype)
    b = rng.standard_normal(20).astype(dtype)
    y = native.forward(x, w, b, (1, 1), (1, 1), (1, 1), 6, 5)
    np.testing.assert_array_equal(y, np.broadcast_to(b, (2, 6, 5, 20)))
    np.testing.assert_array_equal(native.forward(x, w, None, (1, 1), (1, 1), (1, 1), 6, 5), 0)
    dy = rng.standard_normal((2, 6, 5, 20)).astype(dtype)
    assert native.input_grad(dy, w, x.shape, (1, 1), (1, 1), (1, 1)).shape == x.shape
    assert native.weight_grad(x, dy, w.shape, (1, 1), (1, 1), (1, 1)).shape == w.shape
    assert not native.taps_weight_grad(0, 3, (1, 1))  # its tiles need taps to hold


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_kernels_with_rows_strides_and_dilations_apart(dtype):
    """conv_fwd_rows and conv_dw_rows with a row stride and dilation different from the
    column ones (their vectors run along columns, at stride 1)."""
    x = rng.standard_normal((2, 11, 23, 3)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 2)).astype(dtype)
    stride, padding, dilation = (2, 1), (1, 2), (2, 3)
    Ho = conv_ops.conv_output_size(11, 3, 2, 1, 2)
    Wo = conv_ops.conv_output_size(23, 2, 1, 2, 3)
    dy = rng.standard_normal((2, Ho, Wo, 5)).astype(dtype)
    assert native.runs_along_rows(dtype, 3, 5, stride)
    dw = native.weight_grad(x, dy, w.shape, stride, padding, dilation)
    _, dw_ref, _ = ops.conv2d_backward(x, w, dy, stride, padding, dilation, need_dx=False, chunk=2)
    b = rng.standard_normal(5).astype(dtype)
    y = native.forward(x, w, b, stride, padding, dilation, Ho, Wo)
    y_ref = ops.conv2d_forward(x, w, b, stride, padding, dilation, chunk=2)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got, ref in ((dw, dw_ref), (y, y_ref)):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_taps_weight_grad_with_kernel_rows_left_over(dtype):
    """conv_dw_taps holds three kernel rows at a time: five rows leave two single ones;
    a row dilation and a column stride move the taps."""
    x = rng.standard_normal((2, 13, 11, 3)).astype(dtype)
    w = rng.standard_normal((16, 3, 5, 3)).astype(dtype)
    stride, padding, dilation = (1, 2), (2, 1), (2, 1)
    Ho = conv_ops.conv_output_size(13, 5, 1, 2, 2)
    Wo = conv_ops.conv_output_size(11, 3, 2, 1, 1)
    dy = rng.standard_normal((2, Ho, Wo, 16)).astype(dtype)
    assert native.taps_weight_grad(3, 3, dilation)
    dw = native.weight_grad(x, dy, w.shape, stride, padding, dilation)
    _, dw_ref, _ = ops.conv2d_backward(x, w, dy, stride, padding, dilation, need_dx=False, chunk=2)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(dw, dw_ref, rtol=tol, atol=tol * np.abs(dw_ref).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kernel, stride, padding", [
    ((3, 3), (1, 2), (3, 0)),   # padding past the kernel: a phase reads from inside dy
    ((5, 3), (3, 2), (2, 1)),   # strides apart, kernel rows not a multiple of the stride
    ((2, 2), (3, 3), (0, 0)),   # a stride past the kernel: phases no tap reaches are zero
    ((1, 1), (2, 2), (0, 0)),   # ResNet's strided shortcut
])
def test_input_grad_by_phases(kernel, stride, padding, dtype):
    """conv_dx_phases (dilation 1, any stride): every phase of dx against NumPy."""
    x = rng.standard_normal((2, 13, 11, 17)).astype(dtype)
    w = rng.standard_normal((9, 17) + kernel).astype(dtype)
    Ho = conv_ops.conv_output_size(13, kernel[0], stride[0], padding[0])
    Wo = conv_ops.conv_output_size(11, kernel[1], stride[1], padding[1])
    dy = rng.standard_normal((2, Ho, Wo, 9)).astype(dtype)
    dx = native.input_grad(dy, w, x.shape, stride, padding, (1, 1))
    dx_ref, _, _ = ops.conv2d_backward(x, w, dy, stride, padding, need_dw=False, need_db=False, chunk=2)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol * np.abs(dx_ref).max())


def test_rows_weight_grad_ignores_pixels_past_the_row():
    """The last vector of a row reaches past the output row into real input columns; an
    infinite value there must not reach the taps that do not read it (0 * inf is NaN)."""
    x = rng.standard_normal((1, 4, 20, 1)).astype(np.float32)
    x[0, 0, 19, 0] = np.inf  # read only by tap (0, 2) of output pixel (0, 17)
    w = np.ones((6, 1, 3, 3), np.float32)
    dy = rng.standard_normal((1, 2, 18, 6)).astype(np.float32)
    dw = native.weight_grad(x, dy, w.shape, (1, 1), (0, 0), (1, 1))
    _, dw_ref, _ = ops.conv2d_backward(x, w, dy, 1, 0, need_dx=False, chunk=1)
    np.testing.assert_array_equal(np.isfinite(dw), np.isfinite(dw_ref))
    assert not np.isfinite(dw[:, 0, 0, 2]).any() and np.isfinite(dw[:, 0, 0, :2]).all()
    fin = np.isfinite(dw_ref)
    np.testing.assert_allclose(dw[fin], dw_ref[fin], rtol=2e-5, atol=2e-5 * np.abs(dw_ref[fin]).max())


def test_dispatch_takes_native_for_narrow_layers(monkeypatch):
    """ops.conv2d_* send narrow convolutions to the C kernels, wide ones to BLAS, and
    MPICNN_NATIVE=0 sends everything to NumPy; the results agree."""
    calls = []
    for name in ("forward", "input_grad", "weight_grad"):
        real = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _n=name, _r=real: calls.append(_n) or _r(*a))
    x = rng.standard_normal((2, 10, 10, 16))
    w = rng.standard_normal((16, 16, 3, 3))
    dy = rng.standard_normal((2, 10, 10, 16))
    y = ops.conv2d_forward(x, w, None, 1, 1)
    dx, dw, db = ops.conv2d_backward(x, w, dy, 1, 1)
    assert calls[:3] == ["forward", "weight_grad", "input_grad"]  # (a stride-1 input
    # gradient then runs as a forward convolution: a fourth call)
    calls.clear()
    wide = rng.standard_normal((160, 16, 3, 3))
    ops.conv2d_forward(x, wide, None, 1, 1)
    assert calls == []  # 160 output channels: BLAS
    # first layers: 1 -> 6 (LeNet-5) and 3 -> 16 with 3x3 kernels get the native weight
    # gradient; 3 -> 16 with 5x5 kernels keeps im2col
    lenet = conv_ops.conv_paths(np.float32, (6, 1, 5, 5), (1, 1), (2, 2), (1, 1), 1, (28, 28))
    rgb = conv_ops.conv_paths(np.float32, (16, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, (32, 32))
    rgb5 = conv_ops.conv_paths(np.float32, (16, 3, 5, 5), (1, 1), (2, 2), (1, 1), 1, (32, 32))
    assert lenet["dw"] == rgb["dw"] == "native" and rgb5["dw"] == "im2col"
    winograd = rng.standard_normal((64, 64, 3, 3))
    ops.conv2d_forward(rng.standard_normal((1, 16, 16, 64)), winograd, None, 1, 1)
    assert calls == []  # 64 channels on 16x16 maps: Winograd
    monkeypatch.setenv("MPICNN_NATIVE", "0")
    assert not native.available() and "MPICNN_NATIVE=0" in native.why_unavailable()
    y2 = ops.conv2d_forward(x, w, None, 1, 1)
    dx2, dw2, db2 = ops.conv2d_backward(x, w, dy, 1, 1)
    assert calls == []
    for a, b in ((y, y2), (dx, dx2), (dw, dw2), (db, db2)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_non_contiguous_input_is_copied_not_misread():
    """The kernels read raw memory: a strided view must reach them as a copy."""
    x = rng.standard_normal((2, 8, 8, 32))[..., ::2]  # 16 channels, stride 2
    w = rng.standard_normal((16, 16, 3, 3))
    np.testing.assert_allclose(ops.conv2d_forward(x, w, None, 1, 1),
                               ops.conv2d_forward(np.ascontiguousarray(x), w, None, 1, 1, chunk=1),
                               rtol=1e-12, atol=1e-12)


def _bn_step(x, w, b, dy, allreduce=None):
    y, cache, mean, var, count = norm.batch_norm_train_forward(x, w, b, allreduce=allreduce)
    dx, dw, db = norm.batch_norm_backward(dy, cache, allreduce=allreduce)
    return y, mean, var, dx, dw, db


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6, 9, 7, 16), (4, 5, 5, 64), (5, 3, 7, 10), (33, 10), (2, 3, 4, 5, 12)])
@pytest.mark.parametrize("affine", [True, False])
def test_native_batch_norm_matches_numpy(shape, dtype, affine, monkeypatch):
    """Training forward and backward through the C passes equal the NumPy passes, in the
    input's dtype, with and without affine parameters and with a statistics allreduce."""
    C = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    seen = []

    def allreduce(a):  # a stand-in reduction: records what it sums, doubles nothing
        seen.append(a.copy())
        return a
    got = _bn_step(x, w, b, dy, allreduce)
    monkeypatch.setenv("MPICNN_NATIVE", "0")
    ref_seen = len(seen)
    ref = _bn_step(x, w, b, dy, allreduce)
    assert ref_seen == len(seen) - ref_seen == 3  # count+sums, squares, gradient sums
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for a, r in zip(got, ref):
        assert np.asarray(a).dtype == np.asarray(r).dtype
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol * max(1.0, np.abs(r).max()))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [(2, 2), (3, 3), (2, 3), (1, 2)])
@pytest.mark.parametrize("C", [32, 20, 6, 5, 3, 1])
def test_native_max_pool_matches_numpy(C, k, dtype, monkeypatch):
    """Tiled max pooling in C against ops/pool.py's NumPy code, bit for bit, on whole
    vectors of channels (32), vectors and a tail (20), and counts below a vector with
    their own loops (6, 3, 1) or the general ones (5): ties (zeros after a ReLU, repeated
    values) give dy to the first maximum in window order, NaN propagates to y and takes
    no gradient, -0.0 equals 0.0. The C functions are called directly, so that the
    forward's few-channel loops are tested too (dispatch sends those to NumPy)."""
    x = rng.standard_normal((3, 6 * k[0], 5 * k[1], C)).astype(dtype)
    x[0] = np.maximum(x[0], 0)                      # many all-zero windows
    x[1, :k[0], :k[1]] = 1.5                        # a window of equal values
    last = C - 1
    x[2, 0, 0, 0], x[2, 0, 1, last] = np.nan, -0.0
    x[2, k[0] - 1, k[1] - 1, last] = 0.0
    y = native.max_pool_forward(x, k)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = native.max_pool_backward(dy, x, y, k)
    monkeypatch.setenv("MPICNN_NATIVE", "0")
    y_ref = ops.max_pool2d_forward(x, k)
    dx_ref = ops.max_pool2d_backward(dy, x, y_ref, k)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    assert np.isnan(y[2, 0, 0, 0]) and y.dtype == dx.dtype == dtype


def test_max_pool_dispatch(monkeypatch):
    """The C kernels run the tiled max pool's backward for any channel count and its
    forward from a whole vector of channels on; other geometries keep NumPy's path."""
    calls = []
    for name in ("max_pool_forward", "max_pool_backward"):
        real = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _n=name, _r=real: calls.append(_n) or _r(*a))
    x = rng.standard_normal((2, 8, 8, 16))
    y = ops.max_pool2d_forward(x, 2)
    ops.max_pool2d_backward(np.ones_like(y), x, y, 2)
    assert calls == ["max_pool_forward", "max_pool_backward"]
    calls.clear()
    few = x[..., :6].copy()  # channels short of a vector: NumPy's forward, the C backward
    ops.max_pool2d_backward(np.ones((2, 4, 4, 6)), few, ops.max_pool2d_forward(few, 2), 2)
    assert calls == ["max_pool_backward"]
    calls.clear()
    y = ops.max_pool2d_forward(x, 3, 2, 1)  # overlapping, padded windows
    ops.max_pool2d_backward(np.ones_like(y), x, y, 3, 2, 1)
    assert calls == []


@pytest.mark.parametrize("source", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_gather_matches_numpy_bit_for_bit(source, dtype):
    """The dataset cache's gather: take, astype and (uint8) divide by 255, in one pass."""
    shape = (40, 3, 5, 7)
    if source is np.uint8:
        block = rng.integers(0, 256, shape).astype(np.uint8)
    else:
        block = (rng.standard_normal(shape) * 1e3).astype(source)
    idx = rng.integers(0, 40, 57)  # repeats, any order
    got = native.gather(block, idx, dtype)
    want = np.take(block, idx, axis=0).astype(dtype)
    if source is np.uint8:
        want /= np.dtype(dtype).type(255)
    assert got.dtype == dtype and got.shape == (57, 3, 5, 7)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_native_gather_declines_what_it_cannot_read():
    block = np.zeros((4, 3), np.int16)
    assert native.gather(block, [0], np.float32) is None
    assert native.gather(np.zeros((4, 6), np.float32)[:, ::2], [0], np.float32) is None  # not contiguous
