"""The layout planner (README, "Which layout should I run?"): for a model, dataset,
global batch and N ranks on a calibrated machine, predict every layout's step time,
memory per rank and traffic, and rank them. Pure functions, no MPI:

- ``problem.Problem``: what is trained; ``machine.Machine``: the costs of a machine;
- ``walk``: each rank's local shapes and messages per layer, from the layouts' own
  partition functions; ``predict``: one layout's figures; ``layouts``: every layout for N;
- ``plan(problem, ranks, machine)``: all of them, best first.
"""
import time

from .layouts import enumerate_layouts
from .machine import Machine
from .predict import Layout, Prediction, predict
from .problem import Problem

__all__ = ["Machine", "Problem", "Layout", "Prediction", "predict", "plan", "enumerate_layouts"]


def plan(problem, ranks, machine, memory_per_rank=None, pipeline=True, ps=True):
    """Predictions of every layout that can run ``problem`` on ``ranks`` ranks, those that
    fit ``memory_per_rank`` bytes (default: the machine's; None: no limit) first, each
    group fastest first."""
    limit = memory_per_rank if memory_per_rank is not None else machine.memory_per_rank
    out = []
    c, h, w = problem.sample_shape
    for spec, m, split in enumerate_layouts(ranks, pipeline=pipeline, ps=ps):
        if spec.spatial[0] > h or spec.spatial[1] > w or spec.data * m > problem.batch_size:
            continue  # empty blocks: the trainer refuses these before any layer
        try:
            p = predict(problem, Layout(spec, m, split), machine)
        except ValueError:
            continue  # this layout cannot split this model (thin blocks, a Flatten, too few layers ...)
        p.fits = limit is None or p.memory_bytes <= float(limit)
        out.append(p)
    out.sort(key=lambda p: (not p.fits, bool(p.caveat), p.step_seconds))
    return out


def timed_plan(*args, **kwargs):
    """``plan`` and the seconds it took."""
    t0 = time.perf_counter()
    result = plan(*args, **kwargs)
    return result, time.perf_counter() - t0
