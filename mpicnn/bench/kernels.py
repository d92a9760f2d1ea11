"""``python -m mpicnn.bench.kernels``: how close the CUDA kernels come to the machine.

Memory-bound kernels (elementwise, bias, BatchNorm, dropout, optimizers, pooling,
im2col) are timed and their achieved bandwidth (the bytes they must read and write,
divided by the time) is set against a device-to-device copy of the same size, the
practical ceiling. Convolutions (im2col + cuBLAS GEMM + col2im) report TFLOP/s
against cuDNN through PyTorch (channels-last, same dtype, TF32 off) when PyTorch
with CUDA is importable.

    python -m mpicnn.bench.kernels                         # GPU (cupy backend)
    python -m mpicnn.bench.kernels --backend emu --small   # the same code on the emulator
    python -m mpicnn.bench.kernels --json out.json
    python -m mpicnn.bench.kernels --backend emu --check memcheck,synccheck   # debugger cost

GPU times come from CUDA events around each call (median of ``--repeats`` after
warm-up); emulator times from ``time.perf_counter`` (a smoke test, not a benchmark).
``--check TOOLS`` (emulator only) times every case a second time under
``MPICNN_EMU_CHECK=TOOLS`` and adds its time and the slowdown against the default mode.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

from .. import backend
from ..nn.module import Parameter
from ..nn.optim import SGD, Adam
from ..ops.conv import conv_output_size
from ..ops.cuda import activation, bias, conv, dropout, norm, pool
from .report import table, write_json

# (name, N, C, H=W, O, k, stride, padding): ResNet-ish layers at batch 64, float32.
CONV_SHAPES = [
    ("3x3 64->64 56px", 64, 64, 56, 64, 3, 1, 1),
    ("3x3 128->128 28px s1", 64, 128, 28, 128, 3, 1, 1),
    ("3x3 128->256 28px s2", 64, 128, 28, 256, 3, 2, 1),
    ("1x1 256->256 14px", 64, 256, 14, 256, 1, 1, 0),
    ("7x7 3->64 224px s2", 32, 3, 224, 64, 7, 2, 3),
]
SMALL_CONV_SHAPES = [("3x3 8->8 12px", 2, 8, 12, 8, 3, 1, 1), ("1x1 8->16 6px", 2, 8, 6, 16, 1, 1, 0)]


class Timer:
    """Median milliseconds of ``fn()``: CUDA events on the GPU, perf_counter otherwise."""

    def __init__(self, repeats, warmup=2):
        self.repeats, self.warmup = repeats, warmup
        self.gpu = backend.current() == "cupy"

    def __call__(self, fn):
        for _ in range(self.warmup):
            fn()
        times = []
        if self.gpu:
            import cupy
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            for _ in range(self.repeats):
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(cupy.cuda.get_elapsed_time(start, end))
        else:
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def _copy_fn(xp, src, dst):
    if xp is np:
        return lambda: np.copyto(dst, src)
    return lambda: dst.data.copy_from_device_async(src.data, src.nbytes)  # cudaMemcpyAsync D2D


def checked(timer, fn, tools, ms):
    """Columns of ``fn`` timed again with the emulator's checks ``tools`` on."""
    before = os.environ.get("MPICNN_EMU_CHECK")
    os.environ["MPICNN_EMU_CHECK"] = tools
    try:
        check_ms = timer(fn)
    finally:
        if before is None:
            del os.environ["MPICNN_EMU_CHECK"]
        else:
            os.environ["MPICNN_EMU_CHECK"] = before
    return dict(check_ms=check_ms, check_slowdown=check_ms / ms)


def bench_memory(n, timer, dtype=np.float32, image=(64, 56, 56, 64), check=None):
    """Rows of (kernel, bytes, ms, GB/s, fraction of the copy's GB/s), and with ``check``
    (emulator tools) the time under them."""
    xp = backend.xp()
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)

    def arr(shape):
        return xp.asarray(rng.standard_normal(shape).astype(dt))

    x, y, g = arr(n), arr(n), arr(n)
    rows = []
    copy_ms = timer(_copy_fn(xp, x, y))
    copy_gbs = 2 * x.nbytes / copy_ms / 1e6

    def add(name, nbytes, fn):
        ms = timer(fn)
        gbs = nbytes / ms / 1e6
        rows.append(dict(kernel=name, mbytes=nbytes / 1e6, ms=ms, gb_s=gbs, of_copy=gbs / copy_gbs,
                         **(checked(timer, fn, check, ms) if check else {})))

    rows.append(dict(kernel="device copy", mbytes=2 * x.nbytes / 1e6, ms=copy_ms, gb_s=copy_gbs, of_copy=1.0,
                     **(dict(check_ms=copy_ms, check_slowdown=1.0) if check else {})))
    s = dt.itemsize
    add("relu_forward", 2 * n * s, lambda: activation.relu_forward(x, out=y))
    add("relu_backward", 3 * n * s, lambda: activation.relu_backward(g, x, out=y))
    add("leaky_relu_forward", 2 * n * s, lambda: activation.leaky_relu_forward(x, 0.1))
    C = 64
    rows2 = x.reshape(-1, C)
    b = arr(C)
    add("bias_add", 2 * n * s, lambda: bias.bias_add(rows2, b))
    add("bias_grad", n * s, lambda: bias.bias_grad(rows2))
    add("dropout mask", n * s, lambda: dropout.dropout_scale_mask(1, 2, 0, (n // C, C), 0.5, dt))
    w, bb = arr(C), arr(C)
    add("bn train forward", 5 * n * s, lambda: norm.batch_norm_train_forward(rows2, w, bb))
    _, cache, *_ = norm.batch_norm_train_forward(rows2, w, bb)
    add("bn backward", 5 * n * s, lambda: norm.batch_norm_backward(g.reshape(-1, C), cache))
    p = Parameter(arr(n))
    p.grad = arr(n)
    sgd = SGD([("p", p)], lr=0.1, momentum=0.9)
    adam = Adam([("p", p)], lr=1e-3)
    sgd.step()  # leave the first-step branch
    adam.step()
    add("sgd momentum step", 5 * n * s, sgd.step)
    add("adam step", 7 * n * s, adam.step)

    N, H, W, Cc = image
    img = arr(image)
    yp = pool.max_pool2d_forward(img, 2)
    dyp = arr(yp.shape)
    q = img.nbytes
    add(f"max_pool2d 2x2 fwd {image}", q * 5 // 4, lambda: pool.max_pool2d_forward(img, 2))
    add("max_pool2d 2x2 bwd", q * 5 // 2, lambda: pool.max_pool2d_backward(dyp, img, yp, 2))
    add("max_pool2d 3x3/2 pad 1 fwd", q * 5 // 4, lambda: pool.max_pool2d_forward(img, 3, 2, 1))
    add("avg_pool2d 2x2 fwd", q * 5 // 4, lambda: pool.avg_pool2d_forward(img, 2))
    add("avg_pool2d 2x2 bwd", q * 5 // 4, lambda: pool.avg_pool2d_backward(dyp, image, 2))
    add("global_avg_pool fwd", q, lambda: pool.global_avg_pool_forward(img))
    add("global_max_pool fwd", q, lambda: pool.global_max_pool_forward(img))
    geo = conv._Geometry(img, xp.empty((Cc, Cc, 3, 3), dt), (1, 1), (1, 1), (1, 1), 1, H, W, chunk=N)
    add("im2col 3x3 pad 1", 10 * q, lambda: geo.cols(img, 0, N))  # writes 9x the input, reads it
    return rows


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def bench_conv(shapes, timer, dtype=np.float32, check=None):
    """Forward / dW / dX TFLOP/s of our conv against cuDNN (when PyTorch has CUDA); with
    ``check`` (emulator tools) the forward's time under them."""
    xp = backend.xp()
    rng = np.random.default_rng(0)
    torch = _torch_cuda() if backend.current() == "cupy" else None
    if torch is not None:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for name, n, c, hw, o, k, s, p in shapes:
        ho = conv_output_size(hw, k, s, p)
        x = xp.asarray(rng.standard_normal((n, hw, hw, c)).astype(dtype))
        w = xp.asarray(rng.standard_normal((o, c, k, k)).astype(dtype))
        dy = xp.asarray(rng.standard_normal((n, ho, ho, o)).astype(dtype))
        tflop = 2.0 * n * ho * ho * o * c * k * k / 1e12
        fwd = timer(lambda: conv.conv2d_forward(x, w, None, s, p))
        dw = timer(lambda: conv.conv2d_backward(x, w, dy, s, p, need_dx=False, need_db=False))
        dx = timer(lambda: conv.conv2d_backward(x, w, dy, s, p, need_dw=False, need_db=False))
        row = dict(conv=name, fwd_ms=fwd, dw_ms=dw, dx_ms=dx, fwd_tflops=tflop / fwd * 1e3,
                   dw_tflops=tflop / dw * 1e3, dx_tflops=tflop / dx * 1e3)
        if check:
            row.update(checked(timer, lambda: conv.conv2d_forward(x, w, None, s, p), check, fwd))
        if torch is not None:
            row.update(_torch_conv(torch, x, w, dy, s, p, timer, tflop))
            for kind in ("fwd", "dw", "dx"):  # > 1: faster than cuDNN
                row[f"{kind}_vs_cudnn"] = row[f"cudnn_{kind}_ms"] / row[f"{kind}_ms"]
        rows.append(row)
    return rows


def _torch_conv(torch, x, w, dy, s, p, timer, tflop):
    """cuDNN times of the same convolution (channels-last tensors sharing our data)."""
    tx = torch.as_tensor(x, device="cuda").permute(0, 3, 1, 2)  # NCHW shape, channels-last memory
    tw = torch.as_tensor(w, device="cuda")
    tdy = torch.as_tensor(dy, device="cuda").permute(0, 3, 1, 2)
    conv2d = torch.nn.functional.conv2d
    grad = torch.ops.aten.convolution_backward
    sync = torch.cuda.synchronize

    def fwd():
        conv2d(tx, tw, None, s, p)

    def back(mask):
        return lambda: grad(tdy, tx, tw, None, (s, s), (p, p), (1, 1), False, (0, 0), 1, mask)

    with torch.no_grad():
        f = timer(fwd)
        dw = timer(back((False, True, False)))
        dx = timer(back((True, False, False)))
    sync()
    return dict(cudnn_fwd_ms=f, cudnn_dw_ms=dw, cudnn_dx_ms=dx, cudnn_fwd_tflops=tflop / f * 1e3,
                cudnn_dw_tflops=tflop / dw * 1e3, cudnn_dx_tflops=tflop / dx * 1e3)


def device_info():
    if backend.current() != "cupy":
        return {"backend": backend.current(), "device": "CPU emulator"}
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return {"backend": "cupy", "device": name, "cupy": cupy.__version__,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m mpicnn.bench.kernels", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cupy", choices=["cupy", "emu"])
    ap.add_argument("--small", action="store_true", help="small sizes (the emulator's default)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 20 GPU, 3 emu)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--json", default="bench-results/kernels.json", help="where to write the results")
    ap.add_argument("--check", default=None, metavar="TOOLS",
                    help="emulator only: also time each case under MPICNN_EMU_CHECK=TOOLS "
                         "(memcheck,synccheck) and report the slowdown")
    args = ap.parse_args(argv)
    if args.check is not None:
        from kernels.module import parse_checks
        try:
            parse_checks(args.check, "--check")
        except ValueError as e:
            ap.exit(2, f"mpicnn: error: {e}\n")
        if args.backend != "emu":
            ap.exit(2, "mpicnn: error: --check times the emulator's checks: add --backend emu\n")
    try:
        backend.use(args.backend)
    except (RuntimeError, ValueError) as e:  # cupy without a GPU: as the trainer says it
        ap.exit(2, f"mpicnn: error: --backend {args.backend}: {e}\n")
    small = args.small or args.backend == "emu"
    repeats = args.repeats or (3 if args.backend == "emu" else 20)
    timer = Timer(repeats)
    dtype = np.dtype(args.dtype)
    results = {"info": device_info(), "dtype": dtype.name}
    n = 1 << 16 if small else 1 << 26
    image = (2, 16, 16, 64) if small else (64, 112, 112, 64)
    if args.check:
        results["check"] = args.check
    results["memory"] = bench_memory(n, timer, dtype, image, args.check)
    table(f"memory-bound kernels, {dtype.name}, {n} elements ({results['info']['device']})", results["memory"])
    results["conv"] = bench_conv(SMALL_CONV_SHAPES if small else CONV_SHAPES, timer, dtype, args.check)
    table("convolutions: im2col + GEMM (+ cuDNN when PyTorch has CUDA)", results["conv"])
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
