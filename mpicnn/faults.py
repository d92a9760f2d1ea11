"""Fault injection for tests and for users validating a cluster setup.

``MPICNN_INJECT_FAULT=KIND@[rankR:]stepS[,KIND@...]`` with KIND one of

- ``raise``: raise an exception on that rank (the job must abort, not hang);
- ``nan``:   make that rank's loss NaN (the non-finite check must stop or skip);
- ``kill``:  SIGKILL that rank (the launcher must end the job);
- ``term``:  request a graceful stop as SIGTERM would (checkpoint and exit).

Without ``rankR`` the fault fires on every rank. Each fault fires once, before the
forward pass of step S (0-based global step), and prints a line saying so. A
parameter server (``--parallel ps=K``) fires its faults before it takes the gradients of
step S; ``raise``, ``kill`` and ``term`` act there (the loss is the workers').
"""
import os
import re
import signal
import sys

from .errors import UserError

KINDS = ("raise", "nan", "kill", "term")
PATTERN = re.compile(r"^(?P<kind>[a-z]+)@(?:rank(?P<rank>\d+):)?step(?P<step>\d+)$")
ENV = "MPICNN_INJECT_FAULT"


class InjectedFault(RuntimeError):
    """The exception a ``raise`` fault throws."""


def parse_faults(text):
    """``[(kind, rank or None, step)]`` from the variable's value."""
    faults = []
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        m = PATTERN.match(item)
        if not m or m.group("kind") not in KINDS:
            raise UserError(f"{ENV}={text!r}: cannot read {item!r}; write KIND@rankR:stepS or KIND@stepS "
                            f"with KIND one of {', '.join(KINDS)} (e.g. raise@rank1:step5)")
        rank = m.group("rank")
        faults.append((m.group("kind"), None if rank is None else int(rank), int(m.group("step"))))
    return faults


class FaultPlan:
    def __init__(self, rank, text=None):
        self.rank = rank
        self.pending = [f for f in parse_faults(os.environ.get(ENV) if text is None else text)
                        if f[1] is None or f[1] == rank]

    def fire(self, step):
        """Faults due at ``step`` on this rank, announced; returns the kinds the trainer acts on."""
        due = [f for f in self.pending if f[2] == step]
        self.pending = [f for f in self.pending if f[2] != step]
        kinds = []
        for kind, _, _ in due:
            print(f"mpicnn: injecting fault '{kind}' on rank {self.rank} at step {step} ({ENV})",
                  file=sys.stderr, flush=True)
            if kind == "raise":
                raise InjectedFault(f"fault injected by {ENV} on rank {self.rank} at step {step}")
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            kinds.append(kind)
        return kinds
