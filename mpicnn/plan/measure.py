"""Time the real layer objects on given shapes: the compute side of a calibration.

Each leaf layer type the planner models has a *kind* and a *config* (what besides the
size changes its speed: channels, kernel, stride). ``time_layer`` builds that layer
(``mpicnn.nn``, the code the trainer runs, in the trainer's NHWC layout) and times its
forward and backward on zeros of a given input shape; ``calibrate_compute`` does so
over a grid of sizes for every config it is given and returns the table
``plan.machine`` interpolates. No MPI here: every rank of a job may call it at once,
which is how a calibration sees the cores it will share.
"""
import time

import numpy as np

from .. import nn
from ..nn.module import convert

REPEATS = 7  # timed runs per point after one warm-up
# The lower quartile counts: on a quiet machine it is the median, and on a shared one it
# leaves out the runs another process interrupted (those are not the code's speed).
QUANTILE = 25


def _seconds():
    """(wall, CPU) clocks. A run's time is the smaller difference: CPU time leaves out
    the waits of a process that other processes pushed off its core (short runs escape
    them, long ones do not, which would bend the table), wall time the extra threads a
    multi-threaded BLAS adds up."""
    return time.perf_counter(), time.process_time()


def kind_of(layer):
    """(kind, config) of a leaf layer, or None for one the planner does not model."""
    t = type(layer)
    if t is nn.Conv2d:
        return "conv", {"cin": layer.in_channels, "cout": layer.out_channels, "k": list(layer.kernel_size),
                        "s": list(layer.stride), "p": list(layer.padding)}
    if t is nn.Linear:
        return "linear", {"fin": layer.in_features, "fout": layer.out_features}
    if t is nn.BatchNorm2d:
        return "batchnorm", {"c": layer.num_features}
    if t in (nn.ReLU, nn.LeakyReLU):
        return t.__name__.lower(), {}
    if t in (nn.MaxPool2d, nn.AvgPool2d):
        return t.__name__.lower(), {"k": list(layer.kernel_size), "s": list(layer.stride), "p": list(layer.padding)}
    if t in (nn.GlobalAvgPool2d, nn.GlobalMaxPool2d):
        return t.__name__.lower(), {}
    if t is nn.Dropout:
        return "dropout", {}
    if t is nn.Flatten:
        return "flatten", {}
    return None


def make_layer(kind, config, dtype):
    """A fresh layer of ``kind`` with ``config`` (parameters drawn; values do not matter)."""
    c = config
    if kind == "conv":
        return nn.Conv2d(c["cin"], c["cout"], tuple(c["k"]), stride=tuple(c["s"]), padding=tuple(c["p"]),
                         bias=False, dtype=dtype)
    if kind == "linear":
        return nn.Linear(c["fin"], c["fout"], dtype=dtype)
    if kind == "batchnorm":
        return nn.BatchNorm2d(c["c"], dtype=dtype)
    if kind in ("maxpool2d", "avgpool2d"):
        cls = nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d
        return cls(tuple(c["k"]), stride=tuple(c["s"]), padding=tuple(c["p"]))
    simple = {"relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "globalavgpool2d": nn.GlobalAvgPool2d,
              "globalmaxpool2d": nn.GlobalMaxPool2d, "dropout": nn.Dropout, "flatten": nn.Flatten}
    return simple[kind]()


def _typical_run(fn, repeats):
    fn()  # warm-up: allocation, first-touch
    times = []
    for _ in range(repeats):
        w0, c0 = _seconds()
        fn()
        w1, c1 = _seconds()
        times.append(min(w1 - w0, c1 - c0))
    return float(np.percentile(times, QUANTILE))


def time_layer(layer, shape, dtype, repeats=REPEATS):
    """Seconds of (forward, backward with the input gradient, backward without it) of
    ``layer`` on a zero input of ``shape``: (N, H, W, C) for maps, (N, F) for features."""
    x = np.zeros(shape, dtype)
    if isinstance(layer, nn.Linear) and x.ndim == 4:
        x = x.reshape(x.shape[0], -1)
    layer.train()
    y = layer._forward(x)
    dy = np.ones_like(y)
    fwd = _typical_run(lambda: layer._forward(x), repeats)
    result = [fwd]
    for needs in (True, False):
        if hasattr(layer, "needs_input_grad"):
            layer.needs_input_grad = needs
        elif not needs:  # layers without the switch always compute it
            result.append(result[-1])
            continue

        def both():
            layer._forward(x)
            layer._backward(dy)
        result.append(max(_typical_run(both, repeats) - fwd, 0.0))
    for p in layer.parameters():
        p.grad[...] = 0
    return tuple(result)


def time_add(shape, dtype, repeats=REPEATS):
    """Seconds of one elementwise sum of two arrays of ``shape`` (a residual edge: forward
    y + x, backward dx + dy)."""
    a, b = np.zeros(shape, dtype), np.zeros(shape, dtype)
    return _typical_run(lambda: a + b, repeats)


def time_convert(shape, dtype, repeats=REPEATS):
    """Seconds of the NCHW -> NHWC conversion a model applies to its input batch."""
    x = np.zeros(shape, dtype)
    return _typical_run(lambda: convert(x, "NCHW", "NHWC"), repeats)


def input_shape(kind, config, n, side):
    """An input of n samples and side x side pixels for ``kind`` (features for a Linear;
    channels for the kinds without them: 16)."""
    if kind == "linear":
        return (n, config["fin"])
    c = config.get("cin", config.get("c", config.get("channels", 16)))
    return (n, side, side, c)


def size_of(kind, config, shape):
    """The size the table interpolates over: output pixels of a conv (N*Ho*Wo), samples of
    a Linear, input elements of everything else."""
    if kind == "conv":
        (kh, kw), (sh, sw), (ph, pw) = config["k"], config["s"], config["p"]
        ho = (shape[1] + 2 * ph - kh) // sh + 1
        wo = (shape[2] + 2 * pw - kw) // sw + 1
        return shape[0] * ho * wo
    if kind == "linear":
        return shape[0]
    return int(np.prod(shape))


def work_of(kind, config):
    """Work per unit of size (multiply-adds per output pixel, per sample), 1 for the rest:
    the planner scales a neighbouring config's time by the ratio of these."""
    if kind == "conv":
        return config["cin"] * config["cout"] * config["k"][0] * config["k"][1]
    if kind == "linear":
        return config["fin"] * config["fout"]
    return 1


def calibrate_compute(configs, dtype, sides=(4, 8, 16, 32, 64, 128), batch=8, budget=0.05, deadline=None):
    """The compute table: ``{kind: [{"config": ..., "points": [[size, fwd, bwd, bwd_nodx], ...]}]}``
    for every (kind, config) in ``configs``, timed at input sides ``sides`` with ``batch``
    samples (Linear: batch x side samples) until a point takes longer than ``budget``
    seconds or ``deadline`` (perf_counter) passes. Also kinds "add" and "convert"."""
    table = {}
    for kind, config in configs:
        layer = make_layer(kind, config, dtype)
        series = {"config": config, "points": []}
        for side in sides:
            if deadline is not None and time.perf_counter() > deadline and len(series["points"]) >= 2:
                break
            n = batch * side if kind == "linear" else batch
            shape = input_shape(kind, config, n, side)
            if "k" in config:  # a window op: the input must cover the kernel
                if side + 2 * config["p"][0] < config["k"][0]:
                    continue
            fwd, bwd, nodx = time_layer(layer, shape, dtype)
            series["points"].append([size_of(kind, config, shape), fwd, bwd, nodx])
            if fwd + bwd > budget:
                break
        table.setdefault(kind, []).append(series)
    for kind, timer in (("add", time_add), ("convert", time_convert)):
        points = []
        for side in sides:
            shape = (batch, side, side, 16)
            t = timer(shape, dtype)
            points.append([int(np.prod(shape)), t, t if kind == "add" else 0.0, 0.0])
            if t > budget / 2:
                break
        table[kind] = [{"config": {}, "points": points}]
    return table

