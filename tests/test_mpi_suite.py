"""One ``pytest`` runs the MPI tests too: the tests marked ``mpi`` are run again under
``mpiexec -n 2`` and ``-n 4`` (pytest-mpi's --with-mpi), and any failure there fails here
with that run's output."""
import os
import subprocess

import pytest

from launch import mpi_env, run_mpi

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi_marked_tests(ranks):
    if os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("already inside the MPI run")
    try:
        proc = run_mpi(ranks, "-m", "pytest", "--with-mpi", "-m", "mpi", "-q", "-p", "no:cacheprovider",
                       "--timeout=600", "--timeout-method=thread", TESTS, timeout=1500,
                       env=mpi_env(MPICNN_INNER_MPI_RUN="1"))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"MPI tests on {ranks} ranks did not finish in {e.timeout} s:\n{e.stdout}")
    assert proc.returncode == 0, f"MPI tests on {ranks} ranks failed:\n{proc.stdout}\n{proc.stderr}"
    assert " passed" in proc.stdout, f"no MPI test ran on {ranks} ranks:\n{proc.stdout}"
