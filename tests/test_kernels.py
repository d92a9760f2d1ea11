"""Every CUDA kernel (``kernels/*.cu``) against its NumPy reference op.

Each test runs on the CPU emulator (NumPy arrays), again on the emulator under
MPICNN_EMU_CHECK=memcheck,synccheck (a bounds or barrier fault in a shipped kernel fails
the test) and, where a GPU is visible, on the GPU (CuPy arrays): the ``dev`` fixture
gives the array module. Inputs are fresh random
arrays of odd sizes; every array the launchers allocate is POISONED (NaN, or a
sentinel for integers) so an element a kernel forgets to write shows up. The
references are the NumPy ops themselves (``op.numpy``), whatever the backend.
"""

import zlib

import numpy as np
import pytest

from mpicnn import backend, ops
from mpicnn.nn.module import Parameter
from mpicnn.nn.optim import SGD, Adam, AdamW
from mpicnn.ops import bucket as B
from mpicnn.ops import conv as C
from mpicnn.ops import dropout as D
from mpicnn.ops import halo as HL
from mpicnn.ops import loss as L
from mpicnn.ops import norm as NM
from mpicnn.ops import pool as P
from mpicnn.ops.cuda import activation as kact
from mpicnn.ops.cuda import bias as kbias
from mpicnn.ops.cuda import bucket as kbucket
from mpicnn.ops.cuda import conv as kconv
from mpicnn.ops.cuda import dropout as kdrop
from mpicnn.ops.cuda import halo as khalo
from mpicnn.ops.cuda import loss as kloss
from mpicnn.ops.cuda import norm as knorm
from mpicnn.ops.cuda import pool as kpool


from kernel_backends import EMU_CHECKS, GPU, KERNEL_TARGETS
from tools import require
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}
DTYPES = [np.float32, np.float64]


def _poisoned(module, monkeypatch):
    """Make ``module.empty``/``empty_like`` return NaN-filled (float) or sentinel (int) arrays."""
    empty, empty_like = module.empty, module.empty_like

    def fill(a):
        if a.dtype.kind == "f":
            a.fill(np.nan)
        elif a.dtype.kind in "iu":
            a.fill(np.iinfo(a.dtype).max - 7)
        return a

    monkeypatch.setattr(module, "empty", lambda *a, **k: fill(empty(*a, **k)))
    monkeypatch.setattr(module, "empty_like", lambda *a, **k: fill(empty_like(*a, **k)))


@pytest.fixture(params=KERNEL_TARGETS)
def dev(request, monkeypatch):
    """The array module the kernels run on: numpy (emulator, also under its memcheck and
    synccheck) or cupy (GPU), poisoned."""
    if request.param == "cupy":
        import cupy
        _poisoned(cupy, monkeypatch)
        with backend.using("cupy"):
            yield cupy
    else:
        _poisoned(np, monkeypatch)
        if request.param == "emu-checked":
            monkeypatch.setenv("MPICNN_EMU_CHECK", EMU_CHECKS)
        else:
            monkeypatch.delenv("MPICNN_EMU_CHECK", raising=False)
        with backend.using("emu"):
            yield np


def host(a):
    return backend.to_host(a)


def close(actual, expected, dtype=None, exact=False):
    actual = host(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if exact:
        np.testing.assert_array_equal(actual, expected)
    else:  # absolute error scaled by the array's magnitude: sums cancel
        tol = TOL[np.dtype(dtype or expected.dtype).type]
        finite = np.abs(expected[np.isfinite(expected)])
        scale = finite.max() if finite.size else 0.0
        np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * scale)


def rand(rng, shape, dtype, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(dtype)


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))  # same inputs every run


# ---------------------------------------------------------------------------- activation

@pytest.mark.parametrize("dtype", DTYPES)
def test_activations(dev, rng, dtype):
    x = rand(rng, (3, 7, 5, 5), dtype)
    x[0, 0, 0, :3] = [0.0, np.nan, -0.0]
    dy = rand(rng, x.shape, dtype)
    X, DY = dev.asarray(x), dev.asarray(dy)
    y = ops.relu_forward.numpy(x)
    close(kact.relu_forward(X), y, exact=True)
    out = dev.empty_like(X)
    assert kact.relu_forward(X, out=out) is out
    close(kact.relu_backward(DY, dev.asarray(y)), ops.relu_backward.numpy(dy, y), exact=True)
    close(kact.leaky_relu_forward(X, 0.2), ops.leaky_relu_forward.numpy(x, 0.2), exact=True)
    close(kact.leaky_relu_backward(DY, X, 0.2), ops.leaky_relu_backward.numpy(dy, x, 0.2), exact=True)
    with pytest.raises(ValueError, match="differs"):
        kact.relu_backward(DY, X[:2])
    with pytest.raises(TypeError, match="float32 and float64"):
        kact.relu_forward(X.astype(np.float16))


# ---------------------------------------------------------------------------- conv + bias

CONV_CASES = [
    # (N, H, W, C, O, k, stride, padding, dilation, groups, chunk)
    (3, 7, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, None),
    (3, 7, 5, 5, 6, (5, 5), (2, 2), (2, 2), (1, 1), 1, None),
    (3, 7, 5, 4, 3, (3, 2), (2, 1), (1, 0), (2, 1), 1, 2),
    (3, 7, 5, 6, 9, (3, 3), (1, 2), (1, 1), (1, 1), 3, 1),
    (3, 7, 5, 5, 7, (1, 1), (1, 1), (0, 0), (1, 1), 1, None),
    (3, 7, 5, 5, 7, (1, 1), (2, 2), (0, 0), (1, 1), 1, None),
    (2, 9, 8, 32, 32, (3, 3), (1, 1), (1, 1), (1, 1), 1, None),  # NumPy takes Winograd here
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv(dev, rng, case, dtype):
    N, H, W, Cin, O, k, s, p, d, g, chunk = case
    x = rand(rng, (N, H, W, Cin), dtype)
    w = rand(rng, (O, Cin // g) + k, dtype)
    b = rand(rng, (O,), dtype)
    geo = dict(stride=s, padding=p, dilation=d, groups=g)
    y = ops.conv2d_forward.numpy(x, w, b, **geo)
    X, Wt = dev.asarray(x), dev.asarray(w)
    close(kconv.conv2d_forward(X, Wt, dev.asarray(b), chunk=chunk, **geo), y)
    close(kconv.conv2d_forward(X, Wt, None, chunk=chunk, **geo), ops.conv2d_forward.numpy(x, w, None, **geo))
    dy = rand(rng, y.shape, dtype)
    ref = ops.conv2d_backward.numpy(x, w, dy, **geo)
    got = kconv.conv2d_backward(X, Wt, dev.asarray(dy), chunk=chunk, **geo)
    for a, e in zip(got, ref):
        close(a, e)
    got = kconv.conv2d_backward(X, Wt, dev.asarray(dy), need_dx=False, need_db=False, **geo)
    assert got[0] is None and got[2] is None
    close(got[1], ref[1])


def test_conv_rejects_bad_input(dev, rng):
    x = dev.asarray(rand(rng, (2, 5, 5, 3), np.float32))
    w = dev.asarray(rand(rng, (4, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="input channels"):
        kconv.conv2d_forward(x[..., :2], w)
    with pytest.raises(TypeError, match="dtype"):
        kconv.conv2d_forward(x, w.astype(np.float64))
    with pytest.raises(ValueError, match="dy of shape"):
        kconv.conv2d_backward(x, w, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_add_and_grad(dev, rng, dtype):
    y = rand(rng, (3, 7, 5, 37), dtype)
    b = rand(rng, (37,), dtype)
    Y = dev.asarray(y.copy())
    assert kbias.bias_add(Y, dev.asarray(b)) is Y
    close(Y, y + b, exact=True)
    big = rand(rng, (5000, 3), dtype)  # several block rows in the partial sums
    close(kbias.bias_grad(dev.asarray(big)), big.astype(np.float64).sum(0).astype(dtype))


# ---------------------------------------------------------------------------- pooling

POOL_CASES = [((2, 2), None, (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 2), (1, 2), (1, 0)),
              ((2, 3), (3, 1), (0, 1)), ((1, 1), (2, 2), (0, 0))]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
def test_pool(dev, rng, case, dtype, ties):
    k, s, p = case
    N, H, W, Cc = (3, 8, 6, 5) if k == (2, 2) else (3, 7, 5, 5)
    x = rand(rng, (N, H, W, Cc), dtype)
    if ties:
        x = np.round(x * 2).astype(dtype)  # many equal values: first-maximum rule matters
    X = dev.asarray(x)
    y = P.max_pool2d_forward.numpy(x, k, s, p)
    close(kpool.max_pool2d_forward(X, k, s, p), y, exact=True)
    dy = rand(rng, y.shape, dtype)
    close(kpool.max_pool2d_backward(dev.asarray(dy), X, dev.asarray(y), k, s, p),
          P.max_pool2d_backward.numpy(dy, x, y, k, s, p))
    close(kpool.avg_pool2d_forward(X, k, s, p), P.avg_pool2d_forward.numpy(x, k, s, p))
    close(kpool.avg_pool2d_backward(dev.asarray(dy), x.shape, k, s, p),
          P.avg_pool2d_backward.numpy(dy, x.shape, k, s, p))


def test_max_pool_nan_propagates(dev, rng):
    x = rand(rng, (1, 4, 4, 2), np.float64)
    x[0, 1, 1, 0] = np.nan
    y = host(kpool.max_pool2d_forward(dev.asarray(x), 2))
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y).sum() > 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 7, 5, 5), (2, 1, 3, 40), (2, 2, 2, 3)])
def test_global_pools(dev, rng, dtype, shape):
    x = rand(rng, shape, dtype)
    x[0, 0, 1 % shape[2], 0] = x[0, shape[1] - 1, 0, 0] = 2.0  # a tie: first index wins
    X = dev.asarray(x)
    N, Cc = shape[0], shape[3]
    dy = rand(rng, (N, Cc), dtype)
    DY = dev.asarray(dy)
    close(kpool.global_avg_pool_forward(X), P.global_avg_pool_forward.numpy(x))
    close(kpool.global_avg_pool_backward(DY, shape), P.global_avg_pool_backward.numpy(dy, shape), exact=True)
    y, index = P.global_max_pool_forward.numpy(x)
    Y, IDX = kpool.global_max_pool_forward(X)
    close(Y, y, exact=True)
    close(IDX, index.astype(np.int64), exact=True)
    close(kpool.global_max_pool_backward(DY, IDX, shape), P.global_max_pool_backward.numpy(dy, index, shape),
          exact=True)
    for eps in (0.0, 1e-3):
        y = P.global_rms_pool_forward.numpy(x, eps)
        close(kpool.global_rms_pool_forward(X, eps), y)
        close(kpool.global_rms_pool_backward(DY, X, dev.asarray(y)), P.global_rms_pool_backward.numpy(dy, x, y))
    z = np.zeros(shape, dtype)
    close(kpool.global_rms_pool_backward(DY, dev.asarray(z), dev.asarray(np.zeros((N, Cc), dtype))), z, exact=True)


def test_global_pools_with_fewer_block_rows_than_samples(dev, rng, monkeypatch):
    """blockIdx.y strides over the samples (N may exceed CUDA's 65535 grid rows)."""
    monkeypatch.setattr(kpool, "_global_grid", lambda N, C: ((C + 31) // 32, 2))
    x = rand(rng, (5, 3, 4, 37), np.float64)
    X = dev.asarray(x)
    close(kpool.global_avg_pool_forward(X), P.global_avg_pool_forward.numpy(x))
    close(kpool.global_rms_pool_forward(X), P.global_rms_pool_forward.numpy(x))
    y, index = P.global_max_pool_forward.numpy(x)
    Y, IDX = kpool.global_max_pool_forward(X)
    close(Y, y, exact=True)
    close(IDX, index.astype(np.int64), exact=True)


def test_global_max_nan_is_the_maximum(dev, rng):
    x = rand(rng, (2, 3, 3, 4), np.float32)
    x[1, 2, 0, 3] = x[1, 2, 2, 3] = np.nan
    y, index = P.global_max_pool_forward.numpy(x)
    Y, IDX = kpool.global_max_pool_forward(dev.asarray(x))
    close(IDX, index.astype(np.int64), exact=True)
    assert np.isnan(host(Y)[1, 3])


# ---------------------------------------------------------------------------- batch norm

def _stats_doubler(calls):
    def allreduce(a):  # as if a second rank held the same data
        calls.append(a.copy())
        a *= 2
        return a
    return allreduce


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 7, 5, 5), (9, 37)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm(dev, rng, dtype, shape, affine):
    x = rand(rng, shape, dtype, 1.0, 3.0)
    Cc = shape[-1]
    w = rand(rng, (Cc,), dtype) if affine else None
    b = rand(rng, (Cc,), dtype) if affine else None
    W_ = None if w is None else dev.asarray(w)
    B_ = None if b is None else dev.asarray(b)
    dy = rand(rng, shape, dtype)
    for reduce in (None, "double"):
        ref_calls, got_calls = [], []
        ar_ref = _stats_doubler(ref_calls) if reduce else None
        ar_got = _stats_doubler(got_calls) if reduce else None
        y, cache, mean, var, count = NM.batch_norm_train_forward.numpy(x, w, b, 1e-5, ar_ref)
        Y, CACHE, MEAN, VAR, COUNT = knorm.batch_norm_train_forward(dev.asarray(x), W_, B_, 1e-5, ar_got)
        assert COUNT == count
        close(Y, y)
        close(CACHE[0], cache[0])
        np.testing.assert_allclose(CACHE[1], cache[1], rtol=1e-12)
        close(MEAN, mean, np.float64)
        close(VAR, var, dtype)
        ref = NM.batch_norm_backward.numpy(dy, cache, ar_ref)
        got = knorm.batch_norm_backward(dev.asarray(dy), CACHE, ar_got)
        for a, e in zip(got, ref):
            close(a, e)
        assert len(got_calls) == len(ref_calls)
        for a, e in zip(got_calls, ref_calls):
            # Per-channel sums in another order: a sum that nearly cancels keeps an absolute
            # error of the order of its terms' rounding, so bound it by the array's scale.
            tol = 1e-12 if dtype == np.float64 else 1e-6
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol * float(np.max(np.abs(e))))
    rm, rv = rand(rng, (Cc,), dtype), rand(rng, (Cc,), dtype, 0.5, 2.0)
    y, cache = NM.batch_norm_eval_forward.numpy(x, w, b, rm, rv)
    Y, CACHE = knorm.batch_norm_eval_forward(dev.asarray(x), W_, B_, dev.asarray(rm), dev.asarray(rv))
    close(Y, y, exact=affine)  # elementwise in the reference's order: same bits
    for a, e in zip(knorm.batch_norm_backward(dev.asarray(dy), CACHE), NM.batch_norm_backward.numpy(dy, cache)):
        close(a, e)


# ---------------------------------------------------------------------------- dropout

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, layout", [((3, 7, 5, 5), "NHWC"), ((3, 5, 7, 5), "NCHW"),
                                           ((4, 11), "NHWC"), ((2, 3, 4), "NHWC")])
@pytest.mark.parametrize("p", [0.3, 0.0, 1.0])
def test_dropout_mask_bit_identical(dev, dtype, shape, layout, p):
    seed, step, offset = 2 ** 63 - 12345, 7, 1000
    ref = D.dropout_scale_mask.numpy(seed, step, offset, shape, p, dtype, layout)
    got = kdrop.dropout_scale_mask(seed, step, offset, shape, p, dtype, layout)
    assert backend.array_module(got) is dev
    close(got, ref, exact=True)


def test_dropout_mask_same_in_both_layouts(dev):
    nhwc = host(kdrop.dropout_scale_mask(5, 2, 3, (2, 4, 3, 6), 0.5, np.float32, "NHWC"))
    nchw = host(kdrop.dropout_scale_mask(5, 2, 3, (2, 6, 4, 3), 0.5, np.float32, "NCHW"))
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))


# ---------------------------------------------------------------------------- loss

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("total", [None, 40])
def test_cross_entropy(dev, rng, dtype, total):
    logits = rand(rng, (13, 7), dtype, -4, 4)
    logits[3, 2] = logits[3, 5] = 9.0  # argmax tie: first wins
    labels = rng.integers(0, 7, 13).astype(np.int32)
    labels[3] = 2
    loss, probs, correct = L.cross_entropy_forward.numpy(logits, labels, total)
    LOSS, PROBS, CORRECT = kloss.cross_entropy_forward(dev.asarray(logits), labels, total)
    assert isinstance(LOSS, float) and isinstance(CORRECT, int)
    assert CORRECT == correct
    np.testing.assert_allclose(LOSS, loss, rtol=1e-6 if dtype == np.float32 else 1e-12)
    close(PROBS, probs)
    close(kloss.cross_entropy_backward(PROBS, dev.asarray(labels), total),
          L.cross_entropy_backward.numpy(probs, labels, total))
    with pytest.raises(ValueError, match="out of range"):
        kloss.cross_entropy_forward(dev.asarray(logits), np.full(13, 7))


# ---------------------------------------------------------------------------- optimizers

OPTIMIZER_CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    (SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=5e-4)),
    (Adam, dict(lr=1e-2)),
    (Adam, dict(lr=1e-2, weight_decay=1e-2, betas=(0.8, 0.99))),
    (AdamW, dict(lr=1e-2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_cls, kw", OPTIMIZER_CASES)
def test_optimizer_kernels_equal_numpy(dev, rng, dtype, opt_cls, kw):
    shapes = [(5, 3, 3, 3), (5,), (7, 11)]
    start = [rand(rng, s, dtype) for s in shapes]
    grads = [[rand(rng, s, dtype) for s in shapes] for _ in range(3)]
    runs = []
    for name in ("numpy", "kernels"):
        xp = np if name == "numpy" else dev
        params = [Parameter(xp.asarray(a.copy())) for a in start]
        opt = opt_cls([(str(i), p) for i, p in enumerate(params)], **kw)
        with backend.using("numpy" if name == "numpy" else backend.current()):
            for step_grads in grads:
                for p, g in zip(params, step_grads):
                    p.grad[...] = xp.asarray(g)
                opt.step()
        runs.append((params, opt))
    (ref, ref_opt), (got, got_opt) = runs
    for a, e in zip(got, ref):
        close(a.data, e.data, exact=True)
    for n in ref_opt.state:
        for s in ref_opt.state[n]:
            close(got_opt.state[n][s], ref_opt.state[n][s], exact=True)


# ---------------------------------------------------------------------------- halo and bucket

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, cols", [((0, 2), (0, 5)), ((5, 7), (1, 4)), ((3, 3), (0, 5)), ((0, 7), (4, 5))])
def test_halo_pack_unpack(dev, rng, dtype, rows, cols):
    x = rand(rng, (3, 7, 5, 5), dtype)
    X = dev.asarray(x)
    buf = HL.halo_pack.numpy(x, rows, cols)
    BUF = khalo.halo_pack(X, rows, cols)
    close(BUF, buf, exact=True)
    other = rand(rng, buf.shape, dtype)
    for add in (False, True):
        ref = HL.halo_unpack.numpy(other, x.copy(), rows, cols, add)
        got = khalo.halo_unpack(dev.asarray(other), X.copy(), rows, cols, add)
        close(got, ref, exact=True)
    # round trip: unpacking what was packed leaves x as it was
    Z = dev.zeros_like(X)
    khalo.halo_unpack(BUF, Z, rows, cols)
    close(khalo.halo_pack(Z, rows, cols), buf, exact=True)
    with pytest.raises(ValueError, match="0 <= start <= stop"):
        khalo.halo_pack(X, (2, 9), cols)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bucket_flatten_unflatten(dev, rng, dtype):
    arrays = [rand(rng, s, dtype) for s in [(5, 3, 3, 3), (5,), (0,), (7, 11), (1,)]]
    ARR = [dev.asarray(a) for a in arrays]
    flat = B.bucket_flatten.numpy(arrays)
    FLAT = kbucket.bucket_flatten(ARR)
    close(FLAT, flat, exact=True)
    targets = [dev.zeros_like(a) for a in ARR]
    kbucket.bucket_unflatten(FLAT, targets)
    for t, a in zip(targets, arrays):
        close(t, a, exact=True)
    with pytest.raises(TypeError, match="share one dtype"):
        kbucket.bucket_flatten([ARR[0], ARR[1].astype(np.float16)])


# ---------------------------------------------------------------------------- grid-stride

def test_grid_stride_loops_cover_more_elements_than_threads(dev, rng, monkeypatch):
    """One block of 256 threads for every 1-D launch: each thread loops many times."""
    from mpicnn.ops.cuda import _launch
    monkeypatch.setattr(_launch, "MAX_BLOCKS", 1)
    x = rand(rng, (3, 9, 7, 5), np.float32)
    X = dev.asarray(x)
    close(kact.relu_forward(X), ops.relu_forward.numpy(x), exact=True)
    w = rand(rng, (4, 5, 3, 3), np.float32)
    close(kconv.conv2d_forward(X, dev.asarray(w), None, 2, 1), ops.conv2d_forward.numpy(x, w, None, 2, 1))
    dy = rand(rng, (3, 5, 4, 4), np.float32)
    for a, e in zip(kconv.conv2d_backward(X, dev.asarray(w), dev.asarray(dy), 2, 1),
                    ops.conv2d_backward.numpy(x, w, dy, 2, 1)):
        close(a, e)
    y = P.max_pool2d_forward.numpy(x, 3, 2, 1)
    close(kpool.max_pool2d_forward(X, 3, 2, 1), y, exact=True)
    dyp = rand(rng, y.shape, np.float32)
    close(kpool.max_pool2d_backward(dev.asarray(dyp), X, dev.asarray(y), 3, 2, 1),
          P.max_pool2d_backward.numpy(dyp, x, y, 3, 2, 1))
    close(kdrop.dropout_scale_mask(3, 1, 0, x.shape, 0.5, np.float32),
          D.dropout_scale_mask.numpy(3, 1, 0, x.shape, 0.5, np.float32), exact=True)
    close(khalo.halo_pack(X, (1, 8), (0, 7)), HL.halo_pack.numpy(x, (1, 8), (0, 7)), exact=True)
    close(kbucket.bucket_flatten([X, X[0]]), B.bucket_flatten.numpy([x, x[0]]), exact=True)
    y, *_ = NM.batch_norm_train_forward.numpy(x, None, None)
    close(knorm.batch_norm_train_forward(X, None, None)[0], y)


# ---------------------------------------------------------------------------- dispatch

def test_dispatch_follows_the_backend(monkeypatch):
    monkeypatch.setattr(kact, "relu_forward", lambda x, out=None: "kernel")

    @backend.kernel_version("activation", "relu_forward")
    def relu(x, out=None):
        return "numpy"

    assert relu.numpy(1) == "numpy" and relu.kernel == ("activation", "relu_forward")
    assert backend.current() == "numpy" and relu(1) == "numpy"
    with backend.using("emu"):
        assert backend.runs_kernels() and relu(1) == "kernel"
    assert backend.current() == "numpy" and relu(1) == "numpy"


def test_every_public_op_has_a_kernel_version():
    import importlib
    wrapped = [getattr(mod, name) for mod in (ops.activation, C, D, L, NM, P, HL, B)
               for name in dir(mod) if hasattr(getattr(mod, name), "kernel")]
    wrapped += [SGD._update, Adam._update]
    assert len(wrapped) >= 26
    for op in wrapped:
        family, name = op.kernel
        assert callable(getattr(importlib.import_module(f"mpicnn.ops.cuda.{family}"), name)), op


def test_backend_use_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown backend"):
        backend.use("tpu")
    if not GPU:
        assert backend.use("auto") == "numpy"
        with pytest.raises(RuntimeError, match="GPU"):
            backend.use("cupy")
        assert backend.current() == "numpy"


# ---------------------------------------------------------------------------- NVRTC

FAMILIES = ["activation", "bias", "bucket", "conv", "dropout", "halo", "loss", "norm", "optim", "pool"]


def _nvrtc():
    import kernels
    return kernels.nvrtc_available()


@pytest.mark.parametrize("family", FAMILIES)
def test_kernel_files_compile_with_nvrtc(family):
    """What the GPU will compile: every declared instantiation, with the launchers' options."""
    require(_nvrtc(), "NVRTC (nvidia-cuda-nvrtc-cu12) missing")
    import kernels
    from kernels.loader import declared_instantiations, kernel_path

    from mpicnn.ops.cuda._launch import OPTIONS
    path = kernel_path(family)
    text = path.read_text()
    exprs = declared_instantiations(text)
    assert exprs, f"{path} declares no // @instantiate lines"
    assert text.lstrip().startswith("//"), f"{path} must open with a comment (what, layouts, launch)"
    for arch in ("sm_70", "sm_80", "sm_90"):
        ptx = kernels.compile_ptx(path=path, arch=arch, options=OPTIONS, name_expressions=exprs)
        assert ".entry" in ptx
