"""The native CPU kernels (``ops/native/native.c``): convolution, batch norm and pooling
passes, and the gather of cached dataset samples.

``pip install`` compiles ``native/native.c`` into ``mpicnn/ops/_native_*.so`` (setup.py,
optional extensions: without a C compiler the install still succeeds), on x86-64 once
per micro-architecture level. This module loads the best copy the CPU runs with ctypes
(which releases the GIL during each call) and offers three functions on NHWC arrays
with ops/conv.py's semantics (groups 1, float32 or float64):

    forward(x, w, b, stride, padding, dilation, Ho, Wo)        -> y  (N, Ho, Wo, O)
    input_grad(dy, w, xshape, stride, padding, dilation)       -> dx (N, H, W, C)
    weight_grad(x, dy, wshape, stride, padding, dilation)      -> dw (O, C, KH, KW)

the passes of batch normalisation over channels-last (M, C) arrays that ops/norm.py
uses (``bn_sums``, ``bn_center``, ``bn_scale``, ``bn_grad_sums``, ``bn_grad_input``),
max pooling over tiled windows for ops/pool.py (``max_pool_forward``,
``max_pool_backward``), and ``gather`` for the dataset cache (data/hdf5.py).

``available()`` says whether they can run; ``MPICNN_NATIVE=0`` turns them off (the
NumPy code runs instead; tests compare the two). Weights are repacked here into the
kernels' zero-padded, vector-blocked layouts (small next to the activations).
"""
import ctypes
import glob
import os

import numpy as np

__all__ = ["available", "forward", "input_grad", "weight_grad", "runs_along_rows", "taps_weight_grad", "bn_sums", "bn_center", "bn_scale",
           "bn_grad_sums", "bn_grad_input", "pools", "max_pool_forward", "max_pool_backward", "gather", "library_path",
           "ABI_VERSION"]

ABI_VERSION = 9
VECTOR_BYTES = 64  # the kernels' vector width (V in conv_impl.h)
ROWS_MAX_CHANNELS = 3  # at most this many inputs, fewer outputs than lanes: conv_*_rows
_SUFFIX = {np.dtype(np.float32): "_f32", np.dtype(np.float64): "_f64"}
_GATHER_SOURCES = {np.dtype(np.uint8): "u8", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_lib = None
_why = None
_path = None


# Best first: AVX-512, AVX2, then what the compiler targets by default.
LEVELS = ("x86_64_v4", "x86_64_v3", "base")


def _candidates():
    here = os.path.dirname(__file__)
    for level in LEVELS:
        yield from sorted(glob.glob(os.path.join(here, f"_native_{level}.*so")))


def library_path():
    """Path of the copy of the library this process uses (or would use), or None."""
    _load()
    return _path


def _load():
    global _lib, _why, _path
    if _lib is not None or _why is not None:
        return _lib
    problems = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            version = lib.mpicnn_native_version()
        except (OSError, AttributeError) as e:
            problems.append(f"{os.path.basename(path)} does not load ({e})")
            continue
        if version != ABI_VERSION:
            problems.append(f"{os.path.basename(path)} is version {version}, this code needs "
                            f"{ABI_VERSION}: reinstall (pip install -e .)")
            continue
        if lib.mpicnn_native_supported():
            break
    else:
        _why = "; ".join(problems) or ("not built (pip install compiles mpicnn/ops/native/native.c "
                                       "when a C compiler is present)")
        return None
    _path = path
    for sfx in _SUFFIX.values():
        for name, npointers, nints in (("conv_fwd", 5, 16), ("conv_fwd_reduce", 5, 15), ("conv_dx", 4, 16),
                                       ("conv_dw", 4, 16), ("conv_dw_rows", 5, 15),
                                       ("conv_fwd_rows", 5, 15), ("conv_dw_taps", 4, 16)):
            fn = getattr(lib, name + sfx)
            fn.argtypes = [ctypes.c_void_p] * npointers + [ctypes.c_int] * nints
            fn.restype = None
        for name, npointers in (("bn_sums", 3), ("bn_center", 4), ("bn_scale", 5), ("bn_grad_sums", 3),
                                ("bn_grad_input", 6)):
            fn = getattr(lib, name + sfx)
            fn.argtypes = [ctypes.c_void_p] * npointers + [ctypes.c_long, ctypes.c_int]
            fn.restype = None
        fn = getattr(lib, "conv_dx_phases" + sfx)
        fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int] * 14
        fn.restype = None
        fn = getattr(lib, "pool_max_fwd" + sfx)
        fn.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_long] + [ctypes.c_int] * 4
        fn.restype = None
        fn = getattr(lib, "pool_max_bwd" + sfx)
        fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] + [ctypes.c_int] * 4
        fn.restype = None
        for source in _GATHER_SOURCES.values():
            fn = getattr(lib, f"gather_{source}{sfx}")
            fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 2
            fn.restype = None
    _lib = lib
    return lib


def available():
    """True when the native kernels are built, load, and are not turned off."""
    return os.environ.get("MPICNN_NATIVE", "1") != "0" and _load() is not None


def why_unavailable():
    """A sentence saying why ``available()`` is False (None when it is True)."""
    if os.environ.get("MPICNN_NATIVE", "1") == "0":
        return "turned off by MPICNN_NATIVE=0"
    _load()
    return _why


def supports(dtype, groups):
    """Whether the native kernels can run a convolution in ``dtype`` with ``groups``."""
    return groups == 1 and np.dtype(dtype) in _SUFFIX and available()


def _lanes(dtype):
    return VECTOR_BYTES // dtype.itemsize


def _vectors(channels, dtype):
    """Vectors per register block (1, 2 or 4): as many as the channels fill."""
    lanes = _lanes(dtype)
    return 1 if channels <= lanes else 2 if channels <= 2 * lanes else 4


def _blocked(m, nv, dtype):
    """(..., K) -> (ceil(K/B), ..., B) zero-padded, B = nv vectors of lanes."""
    B = nv * _lanes(dtype)
    K = m.shape[-1]
    nb = -(-K // B)
    out = np.zeros(m.shape[:-1] + (nb * B,), dtype)
    out[..., :K] = m
    out = out.reshape(m.shape[:-1] + (nb, B))
    return np.ascontiguousarray(np.moveaxis(out, -2, 0))


def _p(a):
    """The address of ``a``'s data: the caller must keep ``a`` referenced during the call."""
    return a.ctypes.data


def _geometry_args(xshape, KH, KW, stride, padding, dilation, Ho, Wo):
    N, H, W, C = xshape
    return (N, H, W, C, KH, KW, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1], Ho, Wo)


def forward(x, w, b, stride, padding, dilation, Ho, Wo):
    """y = conv(x) + b for C-contiguous NHWC ``x`` and OIHW ``w`` (groups 1)."""
    dt = x.dtype
    O, C, KH, KW = w.shape
    N, H, W, _ = x.shape
    y = np.empty((N, Ho, Wo, O), dt)
    bias = np.ascontiguousarray(np.zeros(O, dt) if b is None else b, dt)
    lanes = _lanes(dt)
    if runs_along_rows(dt, C, O, stride):
        Wq = -(-Wo // lanes) * lanes
        xq = np.empty(C * (H + 2 * padding[0]) * (Wq + (KW - 1) * dilation[1]), dt)
        wc = np.ascontiguousarray(w, dt)
        getattr(_load(), "conv_fwd_rows" + _SUFFIX[dt])(
            _p(x), _p(wc), _p(bias), _p(y), _p(xq),
            *_geometry_args(x.shape, KH, KW, stride, padding, dilation, Ho, Wo), O)
        return y
    xpad = np.empty((H + 2 * padding[0]) * (W + 2 * padding[1]) * C, dt)
    if O <= lanes // 2 and C % lanes == 0:
        # Few outputs: vectors run over input channels and are summed across lanes.
        wr = w.transpose(2, 3, 1, 0).reshape(KH, KW, C // lanes, lanes, O).transpose(0, 1, 2, 4, 3)
        wr = np.ascontiguousarray(wr, dt)
        getattr(_load(), "conv_fwd_reduce" + _SUFFIX[dt])(
            _p(x), _p(wr), _p(bias), _p(y), _p(xpad),
            *_geometry_args(x.shape, KH, KW, stride, padding, dilation, Ho, Wo), O)
        return y
    nv = _vectors(O, dt)
    wp = _blocked(w.transpose(2, 3, 1, 0), nv, dt)  # (nob, KH, KW, C, OB)
    bp = _blocked(bias, nv, dt)
    fn = getattr(_load(), "conv_fwd" + _SUFFIX[dt])
    fn(_p(x), _p(wp), _p(bp), _p(y), _p(xpad),
       *_geometry_args(x.shape, KH, KW, stride, padding, dilation, Ho, Wo), O, nv)
    return y


def input_grad(dy, w, xshape, stride, padding, dilation):
    """dx of a convolution whose output gradient is C-contiguous NHWC ``dy``."""
    dt = dy.dtype
    O, C, KH, KW = w.shape
    qh, qw = dilation[0] * (KH - 1) - padding[0], dilation[1] * (KW - 1) - padding[1]
    if tuple(stride) == (1, 1) and qh >= 0 and qw >= 0:
        # The transposed convolution: dY correlated with the flipped weight, channels
        # swapped. The forward kernel keeps every pixel's sum in registers over all taps,
        # where the scatter below adds each tap's part into dX in memory.
        wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        return forward(dy, wt, None, (1, 1), (qh, qw), dilation, xshape[1], xshape[2])
    if tuple(dilation) == (1, 1):
        return _input_grad_phases(dy, w, xshape, stride, padding)
    nv = _vectors(C, dt)
    wt = _blocked(w.transpose(2, 3, 0, 1), nv, dt)  # (ncb, KH, KW, O, CB)
    N, H, W, _ = xshape
    Ho, Wo = dy.shape[1:3]
    dx = np.empty(xshape, dt)
    dxpad = np.empty((H + 2 * padding[0]) * (W + 2 * padding[1]) * C, dt)
    fn = getattr(_load(), "conv_dx" + _SUFFIX[dt])
    fn(_p(dy), _p(wt), _p(dx), _p(dxpad),
       *_geometry_args(xshape, KH, KW, stride, padding, dilation, Ho, Wo), O, nv)
    return dx


def runs_along_rows(dtype, C, O, stride):
    """Whether ``forward`` and ``weight_grad`` run conv_fwd_rows and conv_dw_rows, with
    vectors along rows of output pixels: 1-3 input channels and fewer outputs than a
    vector has lanes, at stride 1 along W. There conv_fwd fills O of the lanes and
    conv_dw's tiles are too thin (LeNet-5's 1->6: forward 0.60 -> 0.2 ms, weight gradient
    0.90 ms in im2col + BLAS -> 0.36 ms); with 16+ outputs the planar copy of dy costs
    the weight gradient as much as im2col saves."""
    return C <= ROWS_MAX_CHANNELS and O < _lanes(np.dtype(dtype)) and stride[1] == 1


def taps_weight_grad(C, KW, dilation):
    """Whether ``weight_grad`` runs conv_dw_taps: RGB-like first layers, 1-3 input
    channels with 3 kernel columns at dilation 1 along W (batch 64 at 32x32: 3 -> 16
    1.55 ms in im2col + BLAS -> 0.52 ms, 3 -> 64 4.0 -> 2.1 ms)."""
    return 1 <= C <= ROWS_MAX_CHANNELS and KW == 3 and dilation[1] == 1


def _phase(a, s, p, K, size):
    """Phase a (of stride s) along one axis: (its kernel taps' first index r, how many
    taps, how many dx pixels, how many dy pixels before the first the phase reads)."""
    r = (a + p) % s
    taps = len(range(r, K, s))
    return r, taps, len(range(a, size, s)), taps - 1 - (a + p) // s


def _input_grad_phases(dy, w, xshape, stride, padding):
    """dx at stride > 1 (dilation 1) by phases (conv_dx_phases in conv_impl.h): each
    phase's flipped sub-kernel w[:, :, r::sh, r'::sw] packed like a forward's, dx
    channels as its outputs (convnet's stride-2 layers, batch 64: 2.2-2.5 -> 1.5 ms,
    where the scatter adds every tap's part into dx in memory)."""
    dt = dy.dtype
    O, C, KH, KW = w.shape
    N, H, W, _ = xshape
    (sh, sw), (ph, pw) = stride, padding
    Ho, Wo = dy.shape[1:3]
    rows = [_phase(a, sh, ph, KH, H) for a in range(sh)]
    cols = [_phase(b, sw, pw, KW, W) for b in range(sw)]
    pt = max([0] + [lead for _, taps, n, lead in rows if taps and n])
    pl = max([0] + [lead for _, taps, n, lead in cols if taps and n])
    # dypad holds every row and column a phase reads: dy at (pt, pl), zeros around it
    Hq = max([pt + Ho] + [pt - lead + n + taps - 1 for _, taps, n, lead in rows if taps and n])
    Wq = max([pl + Wo] + [pl - lead + n + taps - 1 for _, taps, n, lead in cols if taps and n])
    nv = _vectors(C, dt)
    geometry, packed, offset = [], [], 0
    for a, (r, U, Hy, lead_r) in enumerate(rows):
        for b, (q, V, Wy, lead_c) in enumerate(cols):
            geometry.append((a, b, pt - lead_r, pl - lead_c, Hy, Wy, U, V, offset))
            if U and V:
                sub = w[:, :, r::sh, q::sw][:, :, ::-1, ::-1]  # (O, C, U, V), flipped
                block = _blocked(sub.transpose(2, 3, 0, 1), nv, dt)  # (ncb, U, V, O, CB)
                packed.append(block.ravel())
                offset += block.size
    wph = np.concatenate(packed) if packed else np.zeros(1, dt)
    ph_geo = np.array(geometry, np.int64)
    bzero = np.zeros(nv * _lanes(dt) * -(-C // (nv * _lanes(dt))), dt)
    dx = np.empty(xshape, dt)
    dypad = np.empty(Hq * Wq * O, dt)
    getattr(_load(), "conv_dx_phases" + _SUFFIX[dt])(
        _p(dy), _p(wph), _p(ph_geo), _p(bzero), _p(dx), _p(dypad),
        N, H, W, C, Ho, Wo, O, sh, sw, pt, pl, Hq, Wq, nv)
    return dx


def weight_grad(x, dy, wshape, stride, padding, dilation):
    """dw (O, C, KH, KW) of a convolution of C-contiguous NHWC ``x`` with output gradient ``dy``."""
    dt = x.dtype
    O, C, KH, KW = wshape
    N, H, W, _ = x.shape
    Ho, Wo = dy.shape[1:3]
    if runs_along_rows(dt, C, O, stride):
        # Few input channels: vectors run along rows of output pixels (planar copies).
        lanes = _lanes(dt)
        Wq = -(-Wo // lanes) * lanes
        dw = np.empty(wshape, dt)
        xq = np.empty(C * (H + 2 * padding[0]) * (Wq + (KW - 1) * dilation[1]), dt)
        dyq = np.empty(O * (Ho * Wq + lanes), dt)
        getattr(_load(), "conv_dw_rows" + _SUFFIX[dt])(
            _p(x), _p(dy), _p(dw), _p(xq), _p(dyq),
            *_geometry_args(x.shape, KH, KW, stride, padding, dilation, Ho, Wo), O)
        return dw
    nv = _vectors(O, dt)
    B = nv * _lanes(dt)
    nob = -(-O // B)
    kernel = "conv_dw_taps" if taps_weight_grad(C, KW, dilation) else "conv_dw"
    if O != nob * B:  # the kernel reads dy rows as whole vectors
        padded = np.zeros(dy.shape[:3] + (nob * B,), dt)
        padded[..., :O] = dy
        dy = padded
    dwp = np.zeros((nob, KH, KW, C, B), dt)
    xpad = np.empty((H + 2 * padding[0]) * (W + 2 * padding[1]) * C, dt)
    fn = getattr(_load(), kernel + _SUFFIX[dt])
    fn(_p(x), _p(dy), _p(dwp), _p(xpad),
       *_geometry_args(x.shape, KH, KW, stride, padding, dilation, Ho, Wo), nob * B, nv)
    # (nob, KH, KW, C, B) -> (O, C, KH, KW)
    dw = dwp.transpose(0, 4, 3, 1, 2).reshape(nob * B, C, KH, KW)[:O]
    return np.ascontiguousarray(dw)


# ---------------------------------------------------------------------------- batch norm
# Arguments are C-contiguous (M, C) arrays of one float dtype (the caller's ``_rows``
# views); per-channel vectors are cast to that dtype here, sums come back in float64.

def _fn(name, dtype):
    return getattr(_load(), name + _SUFFIX[np.dtype(dtype)])


def _vec(v, dtype):
    return np.ascontiguousarray(v, dtype=dtype)


def bn_sums(x, y=None):
    """float64 (C,): sum over rows of x, or of x * y."""
    M, C = x.shape
    out = np.empty(C, np.float64)
    _fn("bn_sums", x.dtype)(_p(x), None if y is None else _p(y), _p(out), M, C)
    return out


def bn_center(x, mean):
    """(x - mean, float64 (C,) sum of its squares)."""
    M, C = x.shape
    centred = np.empty_like(x)
    sq = np.empty(C, np.float64)
    mean = _vec(mean, x.dtype)  # held in a name: the C call reads its memory
    _fn("bn_center", x.dtype)(_p(x), _p(mean), _p(centred), _p(sq), M, C)
    return centred, sq


def bn_scale(xhat, invstd, weight, bias):
    """Scales ``xhat`` by invstd in place; returns y = xhat * weight + bias."""
    M, C = xhat.shape
    dt = xhat.dtype
    y = np.empty_like(xhat)
    invstd = _vec(invstd, dt)
    weight = np.ones(C, dt) if weight is None else _vec(weight, dt)
    bias = np.zeros(C, dt) if bias is None else _vec(bias, dt)
    _fn("bn_scale", dt)(_p(xhat), _p(invstd), _p(weight), _p(bias), _p(y), M, C)
    return y


def bn_grad_sums(dy, xhat):
    """float64 (2C,): sums of dy, then of dy * xhat."""
    M, C = dy.shape
    out = np.empty(2 * C, np.float64)
    _fn("bn_grad_sums", dy.dtype)(_p(dy), _p(xhat), _p(out), M, C)
    return out


def bn_grad_input(dy, xhat, p, q, g):
    """dx = ((dy - xhat * p) - q) * g with per-channel p, q, g."""
    M, C = dy.shape
    dt = dy.dtype
    dx = np.empty_like(dy)
    p, q, g = _vec(p, dt), _vec(q, dt), _vec(g, dt)
    _fn("bn_grad_input", dt)(_p(dy), _p(xhat), _p(p), _p(q), _p(g), _p(dx), M, C)
    return dx


# ---------------------------------------------------------------------------- max pool
# Tiled windows only (window == stride, no padding, sizes divisible: ops/pool.py checks)
# (``pools(dtype, C, backward)``); x, y and dy C-contiguous NHWC of one dtype.

def pools(dtype, C, backward):
    """Whether the native max pool runs ``C`` channels of ``dtype``: the backward always
    (NumPy's needs 5 passes over masks when windows hold ties; lenet5's first pool at
    batch 64: 880 -> 290 us), the forward from one whole vector of channels on (with
    fewer, NumPy's row-wide passes are as fast: 1 channel 28 against 94 us)."""
    return supports(dtype, 1) and (backward or C >= _lanes(np.dtype(dtype)))


def max_pool_forward(x, k):
    N, H, W, C = x.shape
    Ho, Wo = H // k[0], W // k[1]
    y = np.empty((N, Ho, Wo, C), x.dtype)
    _fn("pool_max_fwd", x.dtype)(_p(x), _p(y), N * Ho, k[0], Wo, k[1], C)
    return y


def max_pool_backward(dy, x, y, k):
    N, Ho, Wo, C = y.shape
    dx = np.empty(x.shape, x.dtype)
    _fn("pool_max_bwd", x.dtype)(_p(dy), _p(x), _p(y), _p(dx), N * Ho, k[0], Wo, k[1], C)
    return dx


def gather(block, idx, dtype):
    """``block[idx]`` (rows of a C-contiguous (N, ...) array of uint8, float32 or float64)
    as float ``dtype``, uint8 divided by 255: NumPy's ``take``, ``astype`` and divide in
    one pass, bit for bit, with the GIL released (ctypes); None when the library cannot
    (then the caller runs NumPy). ``idx`` must be in range (the caller checked)."""
    dtype = np.dtype(dtype)
    if block.dtype not in _GATHER_SOURCES or dtype not in _SUFFIX or not block.flags.c_contiguous \
            or not available():
        return None
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    out = np.empty((len(idx),) + block.shape[1:], dtype)
    row = int(np.prod(block.shape[1:], dtype=np.int64))
    _fn(f"gather_{_GATHER_SOURCES[block.dtype]}", dtype)(_p(block), _p(idx), _p(out), len(idx), row)
    return out
