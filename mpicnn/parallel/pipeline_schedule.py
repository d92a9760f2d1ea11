"""The order of a pipeline stage's forwards and backwards: a pure function, no MPI, so
that the stages (``parallel.pipeline``) and the planner (``mpicnn.plan``) read the same
schedule."""


def schedule(kind, stages, stage, micro_batches):
    """This stage's actions in order: ("F", m) is the forward of micro-batch m, ("B", m)
    its backward. Backwards run in micro-batch order, so gradients add up in the order
    of a 1-rank run."""
    M = micro_batches
    if kind == "gpipe":
        return [("F", m) for m in range(M)] + [("B", m) for m in range(M)]
    if kind != "1f1b":
        raise ValueError(f"unknown pipeline schedule {kind!r}; use gpipe or 1f1b")
    warm = min(stages - 1 - stage, M)  # forwards before the first backward can arrive
    actions = [("F", m) for m in range(warm)]
    for m in range(warm, M):
        actions += [("F", m), ("B", m - warm)]
    return actions + [("B", m) for m in range(M - warm, M)]
