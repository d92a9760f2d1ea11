"""The stop request: the first signal is recorded, repeats of TERM/USR1 are harmless."""
import os
import signal
import time

from mpicnn.signals import StopRequest


def test_first_signal_recorded_and_repeats_ignored():
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's copy arriving after the launcher's
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)
        assert stop.requested and stop.name == "SIGUSR1"
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_quick_second_ctrl_c_does_not_kill():
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # within a second: still graceful
        assert stop.name == "SIGINT"
    finally:
        stop.uninstall()
