#!/bin/bash
#PBS -N mpicnn
#PBS -l select=1:ncpus=2:mpiprocs=2
#PBS -l walltime=01:00:00
#PBS -j oe
# PBS Pro / OpenPBS (Torque: -l nodes=1:ppn=2). One rank per line of $PBS_NODEFILE, i.e. per
# mpiprocs. Trainer arguments go in MPICNN_ARGS (PBS Pro's `qsub -- script args` skips the
# #PBS lines; Torque has qsub -F "args"):
#   qsub -v "MPICNN_ARGS=--model resnet20 --epochs 5" jobs/pbs.sh
#   qsub -l select=2:ncpus=4:mpiprocs=4:ngpus=4 -v "MPICNN_ARGS=--epochs 5" jobs/pbs.sh  # GPU per rank
# Submitting again continues from the newest checkpoint in runs/mpicnn.
# At the walltime (and on qdel) PBS sends TERM to every process of the job, then KILL after
# the queue's kill_delay (often 10 s): mpicnn checkpoints on TERM if the step and the write
# fit into kill_delay. Safer, by hand: qsig -s USR1 JOBID, wait for the job to end, then qdel.
# More settings: jobs/common.sh.
set -euo pipefail
cd "${PBS_O_WORKDIR:-.}"
for MPICNN_JOBS_DIR in "${MPICNN_JOBS_DIR:-}" "$(dirname "$0")" "$PWD/jobs"; do
    if [ -f "$MPICNN_JOBS_DIR/common.sh" ]; then break; fi
done
[ -f "$MPICNN_JOBS_DIR/common.sh" ] || { echo "mpicnn: jobs/common.sh not found; set MPICNN_JOBS_DIR" >&2; exit 1; }
# shellcheck source=common.sh
source "$MPICNN_JOBS_DIR/common.sh"

mpicnn_setup "${PBS_JOBNAME:-mpicnn}" "$@"
np="${MPICNN_NP:-2}" hosts=()
if [ -n "${PBS_NODEFILE:-}" ]; then
    np="${MPICNN_NP:-$(wc -l < "$PBS_NODEFILE")}"
    hosts=(-hostfile "$PBS_NODEFILE")  # understood by MPICH's and Open MPI's mpirun
fi
mpicnn_run mpirun -n "$np" ${hosts[@]+"${hosts[@]}"} \
    ${MPICNN_LAUNCH_OPTS[@]+"${MPICNN_LAUNCH_OPTS[@]}"} "${MPICNN_CMD[@]}"
