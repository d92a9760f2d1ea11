#!/bin/bash
#PBS -N mpicnn
#PBS -l select=1:ncpus=2:mpiprocs=2
#PBS -l walltime=01:00:00
#PBS -j oe
# PBS Pro / Torque. Arguments go to mpicnn.train:
#   PBS Pro: qsub jobs/pbs.sh -- --epochs 5     Torque: qsub -F "--epochs 5" jobs/pbs.sh
set -euo pipefail
cd "${PBS_O_WORKDIR:-.}"
source "${MPICNN_JOBS_DIR:-${PBS_O_WORKDIR:-.}/jobs}/common.sh"
if [ -n "${PBS_NODEFILE:-}" ] && [ -r "$PBS_NODEFILE" ]; then
    exec mpirun -n "$(wc -l < "$PBS_NODEFILE")" -hostfile "$PBS_NODEFILE" "$MPICNN_PYTHON" -m mpicnn.train "$@"
fi
exec mpirun -n "${MPICNN_NP:-2}" "$MPICNN_PYTHON" -m mpicnn.train "$@"
