"""Preemption: SIGTERM, SIGUSR1 and SIGINT ask the run to checkpoint and stop.

The handler only sets a flag. The trainer sums the flag over all ranks in the small
allreduce it does every step anyway, so every rank sees the request at the same step,
checkpoints there and exits, even when the signal reached only some ranks. Repeated
SIGTERM/SIGUSR1 are ignored: schedulers send TERM to every process of a job while the
launcher forwards its own copy, and they send SIGKILL themselves if the job overstays.
A second Ctrl-C (SIGINT) more than a second after the first kills at once.

Slurm sends SIGTERM at the time limit (then SIGKILL after KillWait, 30 s by default);
``#SBATCH --signal=B:USR1@120`` gives an earlier warning. MPICH's mpiexec forwards all
three signals to every rank; Open MPI's kills the ranks shortly after forwarding
SIGTERM, so use SIGUSR1 there.
"""
import signal
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequest:
    def __init__(self):
        self.signal = None
        self.since = None
        self._previous = {}

    def install(self):
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            if signum == signal.SIGINT and time.monotonic() - self.since > 1.0:
                signal.signal(signum, signal.SIG_DFL)  # Ctrl-C again: the user means it
                signal.raise_signal(signum)
            return
        self.signal, self.since = signum, time.monotonic()

    def request(self, signum=signal.SIGTERM):
        """Ask for a stop as if ``signum`` had arrived (fault injection, tests)."""
        self.signal, self.since = signum, time.monotonic()

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
