"""What each top-level layer of a model costs, measured, so that a pipeline is cut where
its stages take equal time rather than at equal layer counts. The model may be built
with ``nn.init.deferred()``: each layer gets memory (zeros: the timing does not depend
on the values) only while it is timed, so profiling never holds the whole model."""
import time

import numpy as np

from .. import backend
from ..nn import CrossEntropyLoss
from ..nn.module import SERIAL, convert
from ..parallel.collectives import sum_in_place
from ..parallel.pipeline import Stage

PROFILE_REPEATS = 4  # timings of each layer: the first pays one-off costs, the fastest counts


def profile_layers(model, x, y, comm):
    """Per top-level layer of the Sequential ``model``, on the micro-batch ``x``, ``y``:
    seconds of forward + backward (fastest of PROFILE_REPEATS, averaged over the ranks of
    ``comm`` so that every rank cuts alike), bytes held (parameters and output), and
    (sample shape, dtype) of its output as a stage ending there sends it. Leaves
    parameters, gradients and buffers as found."""
    layers = list(model.named_children())
    context = model.context
    model.set_context(SERIAL)  # the layers alone, without --sync-bn reductions
    seconds, nbytes, outputs = np.zeros(len(layers)), [], []
    h = convert(backend.asarray(x), "NCHW", model.layout)
    for i, named in enumerate(layers):
        unit = Stage([named])  # one layer: seam conversions included
        with _memory_for(unit):
            seconds[i], h = _time(unit, h, y if i == len(layers) - 1 else None)
            nbytes.append(sum(p.data.nbytes for p in unit.parameters()) + h.nbytes)
        outputs.append((h.shape[1:], h.dtype))
    model.set_context(context)
    sum_in_place(comm, seconds)
    return seconds / comm.Get_size(), nbytes, outputs


def _time(unit, h, labels):
    """(fastest forward + backward seconds of ``unit`` on ``h``, its output). The gradient
    of the output is the loss's for the last layer, else ones (values do not matter)."""
    criterion, xp = CrossEntropyLoss(), backend.array_module(h)
    best = np.inf
    for _ in range(PROFILE_REPEATS):
        t0 = time.perf_counter()
        out = unit._forward(h)
        backend.synchronize()
        took = time.perf_counter() - t0
        if labels is not None:
            criterion(out, labels)
            g = criterion.backward()
        else:
            g = xp.ones_like(out)
        t0 = time.perf_counter()
        unit._backward(g)
        backend.synchronize()
        best = min(best, took + time.perf_counter() - t0)
    return best, out


class _memory_for:
    """Inside: ``unit``'s parameters are real arrays on the backend (their own values, or
    zeros for placeholders) and its buffers are saved; on exit both are put back."""

    def __init__(self, unit):
        self.unit = unit

    def __enter__(self):
        self.params = [(p, p.data, p.grad) for p in self.unit.parameters()]
        for p, data, grad in self.params:
            if grad is None:  # a placeholder: zeros of its shape while timed
                p.data = np.zeros(data.shape, data.dtype)
                p.grad = np.zeros(data.shape, data.dtype)
        backend.to_backend(self.unit)
        self.buffers = [(b, b.copy()) for _, b in self.unit.named_buffers()]  # BatchNorm statistics move
        return self

    def __exit__(self, *exc):
        for b, copy in self.buffers:
            b[...] = copy
        for p, data, grad in self.params:
            if grad is None:
                p.data, p.grad = data, None
        self.unit.zero_grad()
        return False
