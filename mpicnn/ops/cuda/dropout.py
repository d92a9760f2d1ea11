"""The dropout scale mask on ``kernels/dropout.cu``: bit for bit ``mpicnn.ops.dropout``."""
import math

import numpy as np

from ... import backend
from ..dropout import GOLDEN, _M64, dropout_threshold, mix64
from ._launch import Family, i64, launch1d

K = Family("dropout")


def dropout_scale_mask(seed, step, sample_offset, shape, p, dtype, layout="NHWC"):
    """keep / (1 - p) as an array of ``shape`` and ``dtype`` in the backend's array module
    (see ``mpicnn.ops.dropout.dropout_scale_mask``)."""
    threshold = dropout_threshold(p)
    dt = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ValueError("dropout needs an array with a batch axis, got shape ()")
    N = shape[0]
    per_sample = math.prod(shape[1:])
    H = W = C = 1
    nhwc = len(shape) == 4 and layout == "NHWC"
    if nhwc:
        H, W, C = shape[1:]
    k_step = mix64((int(seed) + GOLDEN * (int(step) + 1)) & _M64)
    scale = dt.type(0.0 if float(p) >= 1.0 else 1.0 / (1.0 - float(p)))
    mask = backend.xp().empty(shape, dt)
    launch1d(K.fn("dropout_mask", dt), mask.size,
             (mask, i64(N), i64(per_sample), i64(H), i64(W), i64(C), np.int32(nhwc),
              np.uint64(k_step), np.uint64(int(sample_offset) & _M64), np.uint64(threshold), scale))
    return mask
