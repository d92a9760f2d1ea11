"""``MPICNN_SLOW_RANK=R:F``: make rank R a straggler, for tests and demonstrations.

Rank R sleeps after each compute phase (forward and backward; the optimizer's update)
so that its compute takes F times as long as the other ranks' would for its samples
(their seconds per sample in the step before, where the layout shares them: a node's
cores differ in speed by 10-20% from one run to the next, so F times its own would not
be F times theirs), or else F times as long as its own. It sleeps, so its core is free
for the others (on a shared node, repeating the work would slow every rank). The rank
announces itself on start.
"""
import os
import sys
import time

from .errors import UserError

ENV = "MPICNN_SLOW_RANK"


def parse_slow_rank(text):
    """``(rank, factor)`` or None."""
    if not text:
        return None
    rank, sep, factor = text.partition(":")
    try:
        rank, factor = int(rank), float(factor)
    except ValueError:
        sep = ""
    if not sep or rank < 0 or not factor >= 1.0:
        raise UserError(f"{ENV}={text!r}: write RANK:FACTOR with FACTOR >= 1, e.g. {ENV}=1:2.0 "
                        "(rank 1 computes twice as long)")
    return rank, factor


class Straggler:
    def __init__(self, rank, size=None, text=None):
        parsed = parse_slow_rank(os.environ.get(ENV) if text is None else text)
        if parsed and size is not None and parsed[0] >= size and rank == 0:
            # A warning, not an error: a 1-rank reference run in the same environment is common.
            print(f"mpicnn: {ENV}={parsed[0]}:{parsed[1]:g} names rank {parsed[0]}, but the job has {size} "
                  f"rank(s): no rank is slowed", file=sys.stderr, flush=True)
        self.factor = parsed[1] if parsed and parsed[0] == rank else 1.0
        self.active = parsed is not None  # on every rank: the ranks then share their compute times
        self.overslept = 0.0
        if self.factor > 1.0:
            print(f"mpicnn: rank {rank} is a straggler: its compute takes {self.factor:g}x as long "
                  f"({ENV})", file=sys.stderr, flush=True)

    def after(self, seconds, others=None):
        """Called after ``seconds`` of compute: sleep the extra time; returns the time slept.
        ``others``: what the other ranks would take for the same work, if known (the
        target is then F times that).

        A sleep wakes late (timer slack, and on a busy node the core is taken), by a
        large fraction of a millisecond-long step; what was overslept is taken off the
        next sleep, so the slowdown stays at the factor asked for.
        """
        if self.factor <= 1.0:
            return 0.0
        extra = self.factor * (others or seconds) - seconds
        if extra <= 0:
            return 0.0
        ask = max(extra - self.overslept, 0.0)
        t0 = time.perf_counter()
        if ask > 0:
            time.sleep(ask)
        slept = time.perf_counter() - t0
        self.overslept += slept - extra
        return slept
