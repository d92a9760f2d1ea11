"""What each top-level layer of a model costs, measured, so that a pipeline is cut where
its stages take equal time rather than at equal layer counts."""
import time

import numpy as np

from .. import backend
from ..nn import CrossEntropyLoss
from ..nn.module import SERIAL, convert
from ..parallel.collectives import sum_in_place
from ..parallel.pipeline import Stage

PROFILE_REPEATS = 4  # timings of each layer: the first pays one-off costs, the fastest counts


def profile_layers(model, layers, x, y, context, comm):
    """Per layer of ``layers`` (the named children of ``model``), on the micro-batch
    ``x``, ``y``: seconds of forward + backward (fastest of
    PROFILE_REPEATS, averaged over all ranks so that every rank cuts alike), bytes
    held (parameters and output), and (sample shape, dtype) of its output as a
    stage ending there sends it. Leaves parameters, gradients and buffers as found."""
    backend.to_backend(model)  # time the layers where they will run
    criterion = CrossEntropyLoss()
    units = [Stage([named]) for named in layers]  # one layer each: seam conversions included
    saved = [(b, b.copy()) for _, b in model.named_buffers()]  # BatchNorm statistics move in forward
    model.set_context(SERIAL)  # the layers alone, without --sync-bn reductions
    best = np.full(len(units), np.inf)
    for _ in range(PROFILE_REPEATS):
        took, outputs = [], []
        h = convert(backend.asarray(x), "NCHW", model.layout)
        for unit in units:
            t0 = time.perf_counter()
            h = unit._forward(h)
            backend.synchronize()
            took.append(time.perf_counter() - t0)
            outputs.append((h.shape[1:], h.dtype, h.nbytes))
        criterion(h, y)
        g = criterion.backward()
        for i in reversed(range(len(units))):
            t0 = time.perf_counter()
            g = units[i]._backward(g)
            backend.synchronize()
            took[i] += time.perf_counter() - t0
        best = np.minimum(best, took)
    model.set_context(context)
    for b, copy in saved:
        b[...] = copy
    model.zero_grad()
    sum_in_place(comm, best)
    best /= comm.Get_size()
    nbytes = [sum(p.data.nbytes for p in unit.parameters()) + out[2] for unit, out in zip(units, outputs)]
    return best, nbytes, [out[:2] for out in outputs]
