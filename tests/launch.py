"""Run ``python args...`` under mpiexec for tests, with a hard time limit."""
import os
import subprocess

from mpicnn.parallel.launcher import mpi_command, mpi_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
__all__ = ["mpi_env", "run_mpi"]


def run_mpi(n, *args, timeout=300, env=None, cwd=None):
    return subprocess.run(mpi_command(n, *args), capture_output=True, text=True, timeout=timeout,
                          env=env or mpi_env(), cwd=cwd or ROOT)
