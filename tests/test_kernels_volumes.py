"""The CUDA kernels of the volume and segmentation ops (``kernels/conv3d.cu``,
``pool3d.cu``, ``concat.cu``, ``dense_loss.cu``, ``halo3d.cu``) against their NumPy
reference ops (``op.numpy``), on the emulator (plain and under memcheck/synccheck) and,
where a GPU is visible, on the GPU: the fixtures and tolerances of test_kernels.py
(poisoned outputs, odd sizes). Each file also compiles with NVRTC for sm_70/80/90."""
import numpy as np
import pytest

from mpicnn import backend
from mpicnn.ops import concat as CC
from mpicnn.ops import conv3d as C3
from mpicnn.ops import dense_loss as DL
from mpicnn.ops import halo3d as H3
from mpicnn.ops import pool3d as P3
from mpicnn.ops.cuda import concat as kcc
from mpicnn.ops.cuda import conv3d as kc3
from mpicnn.ops.cuda import dense_loss as kdl
from mpicnn.ops.cuda import halo3d as kh3
from mpicnn.ops.cuda import pool3d as kp3
import test_kernels
from test_kernels import DTYPES, close, rand
from test_kernels import test_kernel_files_compile_with_nvrtc as compiles_with_nvrtc

dev, rng = test_kernels.dev, test_kernels.rng  # the fixtures

FAMILIES = ["conv3d", "pool3d", "concat", "dense_loss", "halo3d"]
# (x shape, out channels, kernel, stride, padding, dilation, groups)
CONV_CASES = [((2, 3, 5, 6, 7), 4, 3, 1, 1, 1, 1), ((3, 4, 7, 5, 6), 6, (3, 2, 3), (2, 1, 2), (1, 0, 1), 1, 2),
              ((1, 2, 9, 8, 7), 3, 3, 1, 2, 2, 1), ((2, 3, 4, 4, 4), 5, 1, 1, 0, 1, 1),
              # a channel rank's empty block: no input channels, no outputs
              ((2, 0, 4, 5, 3), 3, 3, 1, 1, 1, 1), ((2, 3, 4, 5, 3), 0, 3, 1, 1, 1, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv3d(dev, rng, case, dtype):
    shape, O, k, s, p, d, g = CONV_CASES[case]
    x = rand(rng, shape, dtype)
    kk = C3.triple(k, "k")
    w = rand(rng, (O, shape[1] // g) + kk, dtype)
    b = rand(rng, (O,), dtype)
    y = C3.conv3d_forward.numpy(x, w, b, s, p, d, g)
    X, W = dev.asarray(x), dev.asarray(w)
    close(kc3.conv3d_forward(X, W, dev.asarray(b), s, p, d, g), y)
    close(kc3.conv3d_forward(X, W, None, s, p, d, g, chunk=1), C3.conv3d_forward.numpy(x, w, None, s, p, d, g))
    dy = rand(rng, y.shape, dtype)
    ref = C3.conv3d_backward.numpy(x, w, dy, s, p, d, g)
    for chunk in (None, 1):
        for got, want in zip(kc3.conv3d_backward(X, W, dev.asarray(dy), s, p, d, g, chunk=chunk), ref):
            close(got, want)
    dx, dw, db = kc3.conv3d_backward(X, W, dev.asarray(dy), s, p, d, g, need_dx=False, need_db=False)
    assert dx is None and db is None
    close(dw, ref[1])


# (x shape, kernel, stride, padding)
POOL_CASES = [((2, 3, 6, 7, 5), 2, 2, 0), ((1, 2, 7, 6, 9), 3, 2, 1),
              ((2, 1, 5, 5, 6), (3, 2, 3), (1, 2, 2), (1, 1, 0))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
@pytest.mark.parametrize("ties", [False, True])
def test_pool3d(dev, rng, case, dtype, ties):
    """Max pooling's first maximum (ties: values from a small set) and the gradient that
    goes to it; average pooling counting the padding."""
    shape, k, s, p = POOL_CASES[case]
    k, s, p = (C3.triple(v, "v") for v in (k, s, p))
    x = rng.integers(-2, 3, shape).astype(dtype) if ties else rand(rng, shape, dtype)
    X = dev.asarray(x)
    y, index = P3.max_pool3d_forward.numpy(x, k, s, p)
    Y, INDEX = kp3.max_pool3d_forward(X, k, s, p)
    close(Y, y, exact=True)
    close(INDEX, index, exact=True)
    dy = rand(rng, y.shape, dtype)
    close(kp3.max_pool3d_backward(dev.asarray(dy), INDEX, x.shape, k, s, p),
          P3.max_pool3d_backward.numpy(dy, index, x.shape, k, s, p))
    close(kp3.avg_pool3d_forward(X, k, s, p), P3.avg_pool3d_forward.numpy(x, k, s, p))
    close(kp3.avg_pool3d_backward(dev.asarray(dy), x.shape, k, s, p),
          P3.avg_pool3d_backward.numpy(dy, x.shape, k, s, p))


def test_max_pool3d_nan_is_the_maximum(dev, rng):
    x = rand(rng, (1, 1, 4, 4, 4), np.float64)
    x[0, 0, 1, 0, 1] = np.nan
    y, index = P3.max_pool3d_forward.numpy(x, (2, 2, 2), (2, 2, 2), (0, 0, 0))
    Y, INDEX = kp3.max_pool3d_forward(dev.asarray(x), (2, 2, 2), (2, 2, 2), (0, 0, 0))
    close(Y, y, exact=True)
    close(INDEX, index, exact=True)
    assert np.isnan(backend.to_host(Y)[0, 0, 0, 0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, factors, axes", [((2, 3, 4, 5, 3), (2, 2, 2), (2, 3, 4)),
                                                  ((2, 3, 4, 5, 3), (3, 1, 2), (2, 3, 4)),
                                                  ((2, 5, 3, 4), (2, 2), (1, 2))])
def test_upsample_nearest(dev, rng, dtype, shape, factors, axes):
    x = rand(rng, shape, dtype)
    y = P3.upsample_nearest_forward.numpy(x, factors, axes)
    close(kp3.upsample_nearest_forward(dev.asarray(x), factors, axes), y, exact=True)
    dy = rand(rng, y.shape, dtype)
    close(kp3.upsample_nearest_backward(dev.asarray(dy), factors, axes),
          P3.upsample_nearest_backward.numpy(dy, factors, axes))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a_shape, b_shape, axis", [((2, 3, 4, 5, 3), (2, 5, 4, 5, 3), 1),
                                                    ((2, 4, 5, 3), (2, 4, 5, 2), 3), ((3, 2), (3, 0), 1)])
def test_concat_split(dev, rng, dtype, a_shape, b_shape, axis):
    a, b = rand(rng, a_shape, dtype), rand(rng, b_shape, dtype)
    out = CC.concat_channels.numpy(a, b, axis)
    close(kcc.concat_channels(dev.asarray(a), dev.asarray(b), axis), out, exact=True)
    d = rand(rng, out.shape, dtype)
    for got, want in zip(kcc.split_channels(dev.asarray(d), a_shape[axis], axis),
                         CC.split_channels.numpy(d, a_shape[axis], axis)):
        close(got, want, exact=True)
    with pytest.raises(ValueError, match="differ outside"):
        kcc.concat_channels(dev.asarray(a), dev.asarray(a[:1]), axis)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 3, 4, 3, 5), (7, 5)])
@pytest.mark.parametrize("weighted, total", [(False, None), (True, None), (True, 50.0)])
def test_dense_cross_entropy(dev, rng, dtype, shape, weighted, total):
    """Per-position softmax cross-entropy with ignored positions and class weights: loss,
    counts, weight sum and dlogits equal the NumPy op's."""
    logits = rand(rng, shape, dtype, -3, 3)
    targets = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    targets.reshape(-1)[::5] = -1  # ignored
    weight = rng.uniform(0.5, 2.0, shape[1]) if weighted else None
    ref = DL.dense_cross_entropy_forward.numpy(logits, targets, weight, -1, total)
    got = kdl.dense_cross_entropy_forward(dev.asarray(logits), dev.asarray(targets), weight, -1, total)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6 if dtype == np.float32 else 1e-12)
    assert got[2:4] == ref[2:4] and got[3] < targets.size
    np.testing.assert_allclose(got[4], ref[4], rtol=1e-12)
    close(kdl.dense_cross_entropy_backward(got[1]), DL.dense_cross_entropy_backward.numpy(ref[1]))
    with pytest.raises(ValueError, match="out of range"):
        kdl.dense_cross_entropy_forward(dev.asarray(logits), dev.asarray(targets * 0 + shape[1]), None, -1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("total", [None, 40])
def test_mse(dev, rng, dtype, total):
    pred, target = rand(rng, (5, 4, 3), dtype), rand(rng, (5, 4, 3), dtype)
    loss, cache = DL.mse_forward.numpy(pred, target, total)
    got, gcache = kdl.mse_forward(dev.asarray(pred), dev.asarray(target), total)
    np.testing.assert_allclose(got, loss, rtol=1e-12)
    close(kdl.mse_backward(gcache), DL.mse_backward.numpy(cache), exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("box", [((0, 2), (0, 5), (0, 4)), ((3, 5), (1, 4), (2, 3)), ((2, 2), (0, 5), (0, 4)),
                                 ((0, 5), (4, 5), (0, 1))])
def test_halo3d_pack_unpack(dev, rng, dtype, box):
    x = rand(rng, (2, 3, 5, 5, 4), dtype)
    X = dev.asarray(x)
    buf = H3.halo3d_pack.numpy(x, box)
    BUF = kh3.halo3d_pack(X, box)
    close(BUF, buf, exact=True)
    other = rand(rng, buf.shape, dtype)
    for add in (False, True):
        close(kh3.halo3d_unpack(dev.asarray(other), X.copy(), box, add),
              H3.halo3d_unpack.numpy(other, x.copy(), box, add), exact=True)
    with pytest.raises(ValueError, match="0 <= start <= stop"):
        kh3.halo3d_pack(X, ((0, 6), (0, 1), (0, 1)))


def test_volume_ops_dispatch_to_their_kernels():
    """Every decorated volume op names a launcher that exists."""
    import importlib
    wrapped = [getattr(mod, n) for mod in (C3, P3, DL, CC, H3) for n in dir(mod) if hasattr(getattr(mod, n), "kernel")]
    assert len(wrapped) == 16
    for op in wrapped:
        family, name = op.kernel
        assert callable(getattr(importlib.import_module(f"mpicnn.ops.cuda.{family}"), name)), op


@pytest.mark.parametrize("family", FAMILIES)
def test_volume_kernel_files_compile_with_nvrtc(family):
    compiles_with_nvrtc(family)
