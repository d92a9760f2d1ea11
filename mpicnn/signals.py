"""Preemption: SIGTERM, SIGUSR1 and SIGINT ask the run to checkpoint and stop.

The handler only sets a flag. The trainer sums the flag over all ranks in the small
allreduce it does every step anyway, so every rank sees the request at the same step,
checkpoints there and exits, even when the signal reached only some ranks. A second
signal of the same kind restores the default action (a second Ctrl-C kills).

Slurm sends SIGTERM at the time limit (then SIGKILL after KillWait, 30 s by default);
``#SBATCH --signal=B:USR1@120`` gives an earlier warning. MPICH's mpiexec forwards all
three signals to every rank; Open MPI's kills the ranks shortly after forwarding
SIGTERM, so use SIGUSR1 there.
"""
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequest:
    def __init__(self):
        self.signal = None
        self._previous = {}

    def install(self):
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal == signum:  # asked twice: stop trying to be graceful
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signal = signum

    def request(self, signum=signal.SIGTERM):
        """Ask for a stop as if ``signum`` had arrived (fault injection, tests)."""
        self.signal = signum

    @property
    def requested(self):
        return self.signal is not None

    @property
    def name(self):
        return signal.Signals(self.signal).name if self.signal else None

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
