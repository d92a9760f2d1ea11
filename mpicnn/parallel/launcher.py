"""Build ``mpiexec -n N python ...`` command lines (for benchmarks and tests that start jobs)."""
import os
import shutil
import subprocess
import sys
from functools import lru_cache


def mpiexec():
    """The launcher beside this Python (where the MPICH wheel puts it), else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = here if os.path.exists(here) else shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise FileNotFoundError("no mpiexec found: pip install mpich, or load your MPI module")
    return found


@lru_cache(maxsize=None)
def _is_open_mpi(exe):
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return "Open MPI" in out or "OpenRTE" in out


def mpi_command(n, *args):
    """argv that runs ``python args...`` on n ranks; Open MPI gets --oversubscribe so
    more ranks than cores still start (fine for tests, not for timing)."""
    exe = mpiexec()
    cmd = [exe, "-n", str(n)] + (["--oversubscribe"] if _is_open_mpi(exe) else [])
    return cmd + [sys.executable, *args]


def mpi_env(**extra):
    """Environment for launched ranks: one BLAS thread each; Open MPI allowed to run as root."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(extra)
    return env
