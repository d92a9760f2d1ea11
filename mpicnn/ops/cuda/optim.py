"""Fused optimizer updates on ``kernels/optim.cu``: the ``_update`` methods of
``mpicnn.nn.optim`` (called with the optimizer as first argument), bit for bit."""
import numpy as np

from ._launch import Family, i64, launch1d, writable

K = Family("optim")


def _arrays(w, g, state_arrays):
    writable(w, "optimizer parameter", w.shape, w.dtype)
    writable(g, "optimizer gradient", w.shape, w.dtype)
    for name, a in state_arrays.items():
        writable(a, f"optimizer state {name!r}", w.shape, w.dtype)


def sgd_update(opt, w, g, state, lr, dtype):
    """SGD._update: momentum (PyTorch's first-step buffer), Nesterov, weight decay."""
    buf = state["momentum_buffer"] if opt.momentum else w  # w: an unused stand-in
    _arrays(w, g, {"momentum_buffer": buf})
    flags = ((1 if opt.weight_decay else 0) | (2 if opt.momentum else 0)
             | (4 if opt.nesterov else 0) | (8 if opt.steps == 1 else 0))
    launch1d(K.fn("sgd_update", w.dtype), w.size,
             (w, g, buf, i64(w.size), dtype(lr), dtype(opt.weight_decay), dtype(opt.momentum),
              dtype(1 - opt.dampening), np.int32(flags)))


def adam_update(opt, w, g, state, lr, dtype):
    """Adam._update and AdamW's (decoupled weight decay)."""
    m, v = state["exp_avg"], state["exp_avg_sq"]
    _arrays(w, g, {"exp_avg": m, "exp_avg_sq": v})
    b1, b2 = opt.betas
    wd = opt.weight_decay
    flags = (2 if opt.decoupled else 1) if wd else 0
    # The scalars exactly as the reference computes them, in the parameter's dtype.
    decay = dtype(1) - lr * dtype(wd)
    step_size = lr / dtype(1 - b1 ** opt.steps)
    sqrt_bias2 = dtype(np.sqrt(1 - b2 ** opt.steps))
    launch1d(K.fn("adam_update", w.dtype), w.size,
             (w, g, m, v, i64(w.size), dtype(step_size), dtype(wd), dtype(decay), dtype(b1),
              dtype(1 - b1), dtype(b2), dtype(1 - b2), sqrt_bias2, dtype(opt.eps), np.int32(flags)))
