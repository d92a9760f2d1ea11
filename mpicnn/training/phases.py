"""Named phases of a training step, timed in one place.

Every layout enters its phases through the run's ``PhaseClock``:
``with clock.phase("forward"): ...``. The clock keeps this step's seconds per phase (the
loop's figures read them) and calls each of its ``hooks`` with ``(name, step, start,
end)`` (``time.perf_counter`` seconds) when a phase ends: the single place a tracer,
profiler or test attaches to the loop. Phases may repeat within a step (one forward
and one backward per micro-batch); their seconds add up.
"""
import time

PHASES = ("data", "forward", "backward", "exchange", "optimizer", "evaluation", "checkpoint")


class _Phase:
    __slots__ = ("clock", "name", "start")

    def __init__(self, clock, name):
        self.clock, self.name = clock, name

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.clock.record(self.name, self.start, time.perf_counter())
        return False


class PhaseClock:
    def __init__(self):
        self.hooks = []  # callables (name, step, start, end)
        self.step = 0
        self.seconds = dict.fromkeys(PHASES, 0.0)  # of the current step

    def start_step(self, step):
        self.step = step
        for name in self.seconds:
            self.seconds[name] = 0.0

    def phase(self, name):
        """A context manager that times phase ``name`` of the current step."""
        if name not in self.seconds:
            raise ValueError(f"unknown phase {name!r}; phases are {', '.join(PHASES)}")
        return _Phase(self, name)

    def record(self, name, start, end):
        self.seconds[name] += end - start
        for hook in self.hooks:
            hook(name, self.step, start, end)
