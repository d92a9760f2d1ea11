"""Learning-rate schedules: constant, step and cosine, each after an optional linear warm-up.

A schedule is a pure function of the global step (0-based), so a resumed run gets
exactly the rates of an uninterrupted one.
"""
import math

SCHEDULES = ("constant", "step", "cosine")


def make_schedule(kind, base_lr, total_steps, warmup=0, step_size=None, gamma=0.1, min_lr=0.0):
    """Return ``lr(step)``.

    warmup: rate rises linearly from base_lr/warmup to base_lr over the first ``warmup``
    steps (PyTorch's LinearLR convention); the main schedule then runs over the rest.
    step: multiply by ``gamma`` every ``step_size`` steps (default: a third of the run).
    cosine: from base_lr down to ``min_lr`` at ``total_steps``.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup < 0 or total_steps < 1:
        raise ValueError(f"need warmup >= 0 and total_steps >= 1, got {warmup!r}, {total_steps!r}")
    span = max(total_steps - warmup, 1)
    if step_size is None:
        step_size = max(span // 3, 1)

    def lr(step):
        if step < warmup:
            return base_lr * (step + 1) / warmup
        t = step - warmup
        if kind == "constant":
            return base_lr
        if kind == "step":
            return base_lr * gamma ** (t // step_size)
        return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))

    return lr
