"""Per-channel bias add and bias gradient on ``kernels/bias.cu`` (channels-last)."""
from ...backend import array_module
from ._launch import COLS_BLOCK, Family, float_array, i64, launch1d, partial_rows, writable

K = Family("bias")


def bias_add(y, b):
    """y[..., c] += b[c] in place (y C-contiguous, channels last); returns y."""
    C = b.shape[0]
    writable(y, "bias_add y", y.shape, y.dtype)
    b = float_array(b, "bias_add bias", 1)
    if y.shape[-1] != C or b.dtype != y.dtype:
        raise ValueError(f"bias_add: bias {b.shape!r} {b.dtype} does not match the channels of "
                         f"y {y.shape!r} {y.dtype}")
    launch1d(K.fn("bias_add", y.dtype), y.size, (y, b, i64(y.size // C), i64(C)))
    return y


def bias_grad(dy):
    """db[c] = sum of dy[..., c] (channels last), accumulated in double, in dy's dtype."""
    dy = float_array(dy, "bias_grad")
    xp = array_module(dy)
    C = dy.shape[-1]
    rows = dy.size // C if C else 0
    P = partial_rows(rows)
    partial = xp.empty((P, C), xp.float64)
    grid = (max(1, (C + COLS_BLOCK[0] - 1) // COLS_BLOCK[0]), P)
    K.fn("bias_grad_partial", dy.dtype)(grid, COLS_BLOCK, (dy, partial, i64(rows), i64(C)))
    db = xp.empty(C, dy.dtype)
    launch1d(K.fn("bias_grad_finish", dy.dtype), C, (partial, db, i64(P), i64(C)))
    return db
