"""ReLU and LeakyReLU on ``kernels/activation.cu`` (flat, any shape)."""
from ...backend import array_module
from ._launch import Family, float_array, i64, launch1d, writable

K = Family("activation")


def _pair(a, b, name, bname):
    a = float_array(a, name)
    b = float_array(b, name)
    if a.shape != b.shape:
        raise ValueError(f"{name}: dy shape {a.shape!r} differs from {bname} shape {b.shape!r}")
    if a.dtype != b.dtype:
        raise TypeError(f"{name}: dy dtype {a.dtype!r} differs from {bname} dtype {b.dtype!r}")
    return a, b


def relu_forward(x, out=None):
    x = float_array(x, "relu")
    out = array_module(x).empty_like(x) if out is None else writable(out, "relu out", x.shape, x.dtype)
    launch1d(K.fn("relu_forward", x.dtype), x.size, (x, out, i64(x.size)))
    return out


def relu_backward(dy, y, out=None):
    dy, y = _pair(dy, y, "relu backward", "y")
    out = array_module(dy).empty_like(dy) if out is None else writable(out, "relu backward out", dy.shape, dy.dtype)
    launch1d(K.fn("relu_backward", dy.dtype), dy.size, (dy, y, out, i64(dy.size)))
    return out


def leaky_relu_forward(x, negative_slope=0.01):
    x = float_array(x, "leaky_relu")
    y = array_module(x).empty_like(x)
    launch1d(K.fn("leaky_relu_forward", x.dtype), x.size,
             (x, y, x.dtype.type(negative_slope), i64(x.size)))
    return y


def leaky_relu_backward(dy, x, negative_slope=0.01):
    dy, x = _pair(dy, x, "leaky_relu backward", "x")
    dx = array_module(dy).empty_like(dy)
    launch1d(K.fn("leaky_relu_backward", dy.dtype), dy.size,
             (dy, x, dx, dy.dtype.type(negative_slope), i64(dy.size)))
    return dx
