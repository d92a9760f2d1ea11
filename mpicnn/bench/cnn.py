"""Benchmarks of the NumPy layers: the benchmark CNN against PyTorch, conv GFLOP/s, sgemm.

The benchmark CNN (float32, NCHW input (batch, 3, 32, 32)):

    conv 3->32 3x3 pad 1, ReLU, maxpool 2, conv 32->64 3x3 pad 1, ReLU, maxpool 2,
    global average pool, linear 64->10; CrossEntropyLoss.

One step = zero_grad + forward + loss + backward. ``bench_cnn`` times our step and,
when asked and importable, PyTorch's step on the same model (same weights and data)
INTERLEAVED in the same process, so both see the same machine state; it reports
medians. PyTorch is imported only inside ``bench_cnn(compare_torch=True)``.
"""
import time

import numpy as np

from ..blas import blas_threads
from ..nn import (Conv2d, CrossEntropyLoss, GlobalAvgPool2d, Linear, MaxPool2d, ReLU,
                  Sequential, swap_relu_maxpool)
from ..ops import conv as conv_ops
from ..ops.conv import conv2d_backward, conv2d_forward, conv_output_size

__all__ = ["bench_cnn", "bench_conv_layers", "gemm_gflops", "build_benchmark_cnn"]


# ---------------------------------------------------------------------------- benchmark CNN

def build_benchmark_cnn(dtype=np.float32, seed=0):
    """The benchmark CNN; its first conv skips the input gradient (nothing needs it)."""
    rng = np.random.default_rng(seed)
    model = Sequential(
        Conv2d(3, 32, 3, padding=1, dtype=dtype, rng=rng), ReLU(), MaxPool2d(2),
        Conv2d(32, 64, 3, padding=1, dtype=dtype, rng=rng), ReLU(), MaxPool2d(2),
        GlobalAvgPool2d(), Linear(64, 10, dtype=dtype, rng=rng))
    model[0].needs_input_grad = False
    return model


def _torch_model(model, torch):
    nn = torch.nn
    tm = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                       nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    ours = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in tm.named_parameters():
            key = name.replace("8.", "7.") if name.startswith("8.") else name
            p.copy_(torch.from_numpy(ours[key].data))
    return tm


def bench_cnn(batch=64, repeats=20, compare_torch=False, threads=1, warmup=3, seed=0,
              swapped=True):
    """Median ms per training step of the benchmark CNN (ours, and PyTorch interleaved).

    Returns a dict: batch, threads, repeats, ours_ms (median), ours_min_ms, ours_times_ms
    (all samples), and with PyTorch: torch_ms, torch_min_ms, torch_times_ms,
    ratio = ours_ms / torch_ms (below 1: we are faster), torch_version. ``loss`` and
    ``torch_loss`` (same weights and data) show the two compute the same thing.
    With ``swapped`` the same model with each ``ReLU, MaxPool2d`` pair run as
    ``MaxPool2d, ReLU`` (``swap_relu_maxpool``: identical values and gradients) is timed
    too, interleaved: swapped_ms, swapped_min_ms, swapped_times_ms, swapped_ratio.
    """
    rng = np.random.default_rng(seed)
    model = build_benchmark_cnn(np.float32, seed)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    crit = CrossEntropyLoss()

    def step(m):
        def run():
            m.zero_grad()
            loss = crit(m(x), labels)
            m.backward(crit.backward())
            return loss
        return run

    steps = {"ours": step(model)}
    if swapped:
        model2 = build_benchmark_cnn(np.float32, seed)
        swap_relu_maxpool(model2)
        steps["swapped"] = step(model2)

    torch_step = None
    result = {"batch": batch, "threads": threads, "repeats": repeats}
    if compare_torch:
        try:
            import torch
        except ImportError:
            torch = None
            result["torch_error"] = "torch is not importable"
        if torch is not None:
            old_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
            tm = _torch_model(model, torch)
            tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
            tcrit = torch.nn.CrossEntropyLoss()

            def run_torch():
                tm.zero_grad()
                loss = tcrit(tm(tx), ty)
                loss.backward()
                return float(loss.detach())
            torch_step = run_torch
            result["torch_version"] = torch.__version__

    if torch_step is not None:
        steps["torch"] = torch_step
    times = {name: [] for name in steps}
    losses = {}
    with blas_threads(threads) as set_ok:
        result["blas_threads_set"] = set_ok
        for i in range(warmup + repeats):
            for name, run in steps.items():
                t0 = time.perf_counter()
                losses[name] = run()
                t1 = time.perf_counter()
                if i >= warmup:
                    times[name].append((t1 - t0) * 1e3)
    if torch_step is not None:
        torch.set_num_threads(old_threads)
    result["loss"] = losses["ours"]
    for name, t in times.items():
        result.update({f"{name}_ms": float(np.median(t)), f"{name}_min_ms": min(t)})
    if torch_step is not None:
        result["torch_loss"] = losses["torch"]
        result["ratio"] = result["ours_ms"] / result["torch_ms"]
        if swapped:
            result["swapped_ratio"] = result["swapped_ms"] / result["torch_ms"]
    for name, t in times.items():
        result[f"{name}_times_ms"] = t
    return result


# ---------------------------------------------------------------------------- conv layers

# (name, batch, in_channels, height=width, out_channels, kernel, stride, padding)
CONV_SHAPES = (
    ("cnn.conv1", 64, 3, 32, 32, 3, 1, 1),
    ("cnn.conv2", 64, 32, 16, 64, 3, 1, 1),
    ("resnet20.16x32", 64, 16, 32, 16, 3, 1, 1),
    ("resnet20.32x16", 64, 32, 16, 32, 3, 1, 1),
    ("resnet20.64x8", 64, 64, 8, 64, 3, 1, 1),
    ("resnet18.64x56", 8, 64, 56, 64, 3, 1, 1),
    ("resnet18.128x28", 8, 128, 28, 128, 3, 1, 1),
    ("resnet18.64x56.s2", 8, 64, 56, 128, 3, 2, 1),
)


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def bench_conv_layers(shapes=CONV_SHAPES, repeats=7, threads=1, dtype=np.float32, seed=0):
    """Forward, weight-gradient and input-gradient time and GFLOP/s per conv shape.

    One dict per shape: name, shape fields, gflop (2*N*Ho*Wo*O*C*K*K / 1e9, the same for
    the three passes), paths (which code ran forward/dW/dX: native, winograd or im2col;
    ``ops.conv.conv_paths``), fwd_ms, dw_ms (dW and db), dx_ms, and *_gflops for each.
    """
    rng = np.random.default_rng(seed)
    rows = []
    with blas_threads(threads):
        for name, n, c, hw, o, k, s, p in shapes:
            x = rng.standard_normal((n, hw, hw, c)).astype(dtype)
            w = rng.standard_normal((o, c, k, k)).astype(dtype)
            b = rng.standard_normal(o).astype(dtype)
            ho = conv_output_size(hw, k, s, p)
            dy = rng.standard_normal((n, ho, ho, o)).astype(dtype)
            gflop = 2.0 * n * ho * ho * o * c * k * k / 1e9
            conv2d_forward(x, w, b, s, p)  # warm up
            fwd = _median_ms(lambda: conv2d_forward(x, w, b, s, p), repeats)
            dw = _median_ms(lambda: conv2d_backward(x, w, dy, s, p, need_dx=False), repeats)
            dx = _median_ms(lambda: conv2d_backward(x, w, dy, s, p, need_dw=False, need_db=False),
                            repeats)
            paths = "/".join(conv_ops.conv_paths(x.dtype, w.shape, (s, s), (p, p), (1, 1), 1, (hw, hw)).values())
            rows.append(dict(name=name, batch=n, in_channels=c, size=hw, out_channels=o,
                             kernel=k, stride=s, padding=p, gflop=gflop, paths=paths,
                             fwd_ms=fwd, dw_ms=dw, dx_ms=dx, fwd_gflops=gflop / fwd * 1e3,
                             dw_gflops=gflop / dw * 1e3, dx_gflops=gflop / dx * 1e3))
    return rows


def gemm_gflops(n=1024, repeats=7, threads=1, dtype=np.float32):
    """The machine's GEMM rate: GFLOP/s of an (n, n) @ (n, n) NumPy matmul (median)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype)
    with blas_threads(threads):
        np.matmul(a, b, out=out)
        ms = _median_ms(lambda: np.matmul(a, b, out=out), repeats)
    return 2.0 * n ** 3 / ms / 1e6
