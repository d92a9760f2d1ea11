"""Training step of every model of the zoo against PyTorch's CPU build, one thread.

One step = forward, CrossEntropyLoss, backward, Adam step, zero_grad, on float32 NCHW
input of the model's natural size (lenet5 1x28x28, the others 3x32x32). Equal work:
the first layer computes no input gradient on either side (``needs_input_grad =
False`` here; in PyTorch the input does not require grad). The PyTorch model mirrors
ours layer by layer and starts from our weights; both sides run INTERLEAVED in one
process (ours, torch, ours, torch, ...) so machine noise hits them alike, and the
figures are medians.

GFLOP/s counts the multiply-adds of the convolutions and linear layers (forward,
weight gradient, input gradient except the first layer's; 2 flops each) over our
median step time; ``peak`` is that rate over the core's fp32 peak (PEAK_GFLOPS).
"""
import time

import numpy as np

from .. import models
from ..blas import blas_threads
from ..nn import (BatchNorm2d, Conv2d, CrossEntropyLoss, Flatten, GlobalAvgPool2d, Linear,
                  MaxPool2d, ReLU, Residual, Sequential)
from ..nn import init, skip_input_gradient
from ..nn.optim import Adam

__all__ = ["ZOO", "bench_zoo", "step_gflop", "PEAK_GFLOPS"]

PEAK_GFLOPS = 113.0  # Zen 4, one core, fp32 FMA (FACTS.md)

# (label, model name, builder options, batch)
ZOO = (
    ("lenet5", "lenet5", {}, 64),
    ("lenet5", "lenet5", {}, 128),
    ("convnet", "convnet", {}, 64),
    ("resnet8", "resnet8", {}, 64),
    ("resnet20", "resnet20", {}, 64),
    ("vgg11w32", "vgg11", {"width": 32}, 64),
    ("vgg11w64", "vgg11", {"width": 64}, 64),
)


def _input_shape(name):
    return (1, 28, 28) if name == "lenet5" else (3, 32, 32)


def build(name, options, seed=0):
    """Our model (float32) with its first layer skipping the input gradient."""
    init.manual_seed(seed)
    c, h, w = _input_shape(name)
    model = models.get(name, c, 10, dtype=np.float32, image_size=(h, w), **options)
    skip_input_gradient(model)
    return model


def step_gflop(model, batch, input_shape):
    """GFLOP of one training step in the conv and linear layers (see module docstring)."""
    total = 0.0
    first = True  # the first weighted layer computes no input gradient

    def visit(m, hw):
        nonlocal total, first
        if isinstance(m, Conv2d):
            ho, wo = m.output_shape(*hw)
            kh, kw = m.kernel_size
            f = 2.0 * batch * ho * wo * m.out_channels * (m.in_channels // m.groups) * kh * kw
            total += f * (2 if first else 3)
            first = False
            return ho, wo
        if isinstance(m, Linear):
            f = 2.0 * batch * m.in_features * m.out_features
            total += f * (2 if first else 3)
            first = False
            return hw
        if isinstance(m, MaxPool2d):
            return tuple((s - k) // st + 1 for s, k, st in zip(hw, m.kernel_size, m.stride))
        if isinstance(m, Residual):
            out = visit(m.block, hw)
            if m._branch("shortcut") is not None:
                visit(m.shortcut, hw)
            return out
        if isinstance(m, Sequential):
            for child in m:
                hw = visit(child, hw)
        return hw

    visit(model, tuple(input_shape[1:]))
    return total / 1e9


def _torch_mirror(model, torch):
    """A torch.nn model computing what ``model`` computes, with its weights (by name)."""
    tnn = torch.nn

    class TorchResidual(tnn.Module):
        def __init__(self, block, shortcut):
            super().__init__()
            self.block = block
            self.shortcut = shortcut

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    def mirror(m):
        if isinstance(m, Conv2d):
            return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                              m.dilation, m.groups, bias=m.bias is not None)
        if isinstance(m, BatchNorm2d):
            return tnn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        if isinstance(m, ReLU):
            return tnn.ReLU()
        if isinstance(m, MaxPool2d):
            return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
        if isinstance(m, GlobalAvgPool2d):
            return tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten())
        if isinstance(m, Flatten):
            return tnn.Flatten()
        if isinstance(m, Linear):
            return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        if isinstance(m, Residual):
            shortcut = m._branch("shortcut")
            return TorchResidual(mirror(m.block), None if shortcut is None else mirror(shortcut))
        if isinstance(m, Sequential):
            layers = [mirror(c) for c in m]
            # Our models pool before the ReLU (same values, models.py); PyTorch users write
            # ReLU then pool, and that is what we compare against.
            for i in range(len(layers) - 1):
                if isinstance(layers[i], tnn.MaxPool2d) and isinstance(layers[i + 1], tnn.ReLU):
                    layers[i], layers[i + 1] = layers[i + 1], layers[i]
            return tnn.Sequential(*layers)
        raise TypeError(f"no PyTorch mirror for {type(m).__name__}")

    tm = mirror(model)
    ours = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in tm.named_parameters():
            p.copy_(torch.from_numpy(np.ascontiguousarray(ours[name].data)))
    return tm


def _our_step(model, x, labels):
    crit = CrossEntropyLoss()
    opt = Adam(model.named_parameters(), lr=1e-3)

    def run():
        loss = crit(model(x), labels)
        model.backward(crit.backward())
        opt.step()
        opt.zero_grad()
        return loss
    return run


def _torch_step(model, x, labels, torch):
    tm = _torch_mirror(model, torch)
    tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
    crit = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(tm.parameters(), lr=1e-3)

    def run():
        loss = crit(tm(tx), ty)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return float(loss.detach())
    return run


def _import_torch():
    try:
        import torch
    except ImportError as e:
        return None, f"PyTorch is not importable ({e}); install torch (CPU build) to compare"
    return torch, None


def bench_zoo(labels=None, repeats=15, warmup=3, compare_torch=False, threads=1, seed=0):
    """Returns ``(rows, torch_note)``: one row per zoo entry (optionally only those
    whose label is in ``labels``), and the PyTorch version compared against, or why
    there is no PyTorch column (None when not asked).

    Row: model, batch, gflop (per step), ours_ms (median), ours_gflops, peak (fraction
    of PEAK_GFLOPS), and with PyTorch torch_ms, ratio = ours_ms / torch_ms (below 1:
    we are faster), loss and torch_loss of the first step (same weights and data: they
    agree); raw samples in ours_times_ms / torch_times_ms.
    """
    torch, why = _import_torch() if compare_torch else (None, None)
    rows = []
    with blas_threads(threads):
        if torch is not None:
            old_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        for label, name, options, batch in ZOO:
            if labels is not None and label not in labels:
                continue
            rng = np.random.default_rng(seed)
            model = build(name, options, seed)
            x = rng.standard_normal((batch,) + _input_shape(name)).astype(np.float32)
            y = rng.integers(0, 10, batch)
            steps = {"ours": _our_step(model, x, y)}
            if torch is not None:
                steps["torch"] = _torch_step(model, x, y, torch)  # mirrors the initial weights
            first_loss, times = {}, {k: [] for k in steps}
            for i in range(warmup + repeats):
                for key, run in steps.items():
                    t0 = time.perf_counter()
                    loss = run()
                    t1 = time.perf_counter()
                    first_loss.setdefault(key, loss)
                    if i >= warmup:
                        times[key].append((t1 - t0) * 1e3)
            gflop = step_gflop(model, batch, _input_shape(name))
            ours = float(np.median(times["ours"]))
            row = {"model": label, "batch": batch, "gflop": gflop, "ours_ms": ours,
                   "ours_gflops": gflop / ours * 1e3, "peak": gflop / ours * 1e3 / PEAK_GFLOPS}
            if torch is not None:
                theirs = float(np.median(times["torch"]))
                row.update(torch_ms=theirs, ratio=ours / theirs, loss=first_loss["ours"],
                           torch_loss=first_loss["torch"])
            row["ours_times_ms"] = times["ours"]
            if torch is not None:
                row["torch_times_ms"] = times["torch"]
            rows.append(row)
        if torch is not None:
            torch.set_num_threads(old_threads)
    return rows, (f"PyTorch {torch.__version__}" if torch is not None else why)


def geomean(values):
    values = list(values)
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")
