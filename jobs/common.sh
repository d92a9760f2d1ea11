# Sourced by the job scripts: environment every mpicnn rank wants on a batch system.
# One BLAS thread per rank: ranks already fill the cores, more threads only fight.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export PYTHONUNBUFFERED=1
# The Python that has mpicnn installed (a venv's python, a module's python3 ...).
MPICNN_PYTHON=${MPICNN_PYTHON:-python3}
