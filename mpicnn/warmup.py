"""The warm-up rule: how many first steps the timed figures leave out. A module of its
own so that the benches that time the trainer from outside (bench scaling's traced
ceiling runs, PyTorch DDP's mirror of the job) apply the trainer's rule without
importing the training package, which loads MPI."""


def warmup_steps(start_step, total_steps):
    """Steps left out of the timed figures: the first pay one-off costs (allocation,
    kernel compilation, caches); a short run keeps at least three quarters."""
    return min(5, max((total_steps - start_step) // 4, 0))
