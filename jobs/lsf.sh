#!/bin/bash
#BSUB -J mpicnn
#BSUB -n 2
#BSUB -W 01:00
#BSUB -o mpicnn-%J.out
#BSUB -wa USR1
#BSUB -wt 2
# IBM Spectrum LSF. bsub reads #BSUB lines only from stdin, so pass trainer arguments in
# MPICNN_ARGS (bsub copies the environment) or give the options on the command line:
#   MPICNN_ARGS="--model resnet20 --epochs 5" bsub < jobs/lsf.sh
#   bsub -n 8 -R "span[ptile=4]" -gpu "num=4" -W 4:00 -wa USR1 -wt 2 -o mpicnn-%J.out jobs/lsf.sh --epochs 5
# Submitting again continues from the newest checkpoint in runs/mpicnn.
# -wa USR1 -wt 2: LSF sends USR1 two minutes before the run limit (-W); the trainer writes a
# checkpoint and exits 0 (the signal also reaches the launcher through this script).
# One rank per slot: LSB_DJOB_NUMPROC ranks on the hosts of $LSB_DJOB_HOSTFILE.
# More settings: jobs/common.sh.
set -euo pipefail
cd "${LS_SUBCWD:-.}"
for MPICNN_JOBS_DIR in "${MPICNN_JOBS_DIR:-}" "$(dirname "$0")" "$PWD/jobs"; do
    if [ -f "$MPICNN_JOBS_DIR/common.sh" ]; then break; fi
done
[ -f "$MPICNN_JOBS_DIR/common.sh" ] || { echo "mpicnn: jobs/common.sh not found; set MPICNN_JOBS_DIR" >&2; exit 1; }
# shellcheck source=common.sh
source "$MPICNN_JOBS_DIR/common.sh"

mpicnn_setup "${LSB_JOBNAME:-mpicnn}" "$@"
hosts=()
if [ -n "${LSB_DJOB_HOSTFILE:-}" ]; then
    hosts=(-hostfile "$LSB_DJOB_HOSTFILE")  # understood by MPICH's and Open MPI's mpirun
fi
mpicnn_run mpirun -n "${MPICNN_NP:-${LSB_DJOB_NUMPROC:-2}}" ${hosts[@]+"${hosts[@]}"} \
    ${MPICNN_LAUNCH_OPTS[@]+"${MPICNN_LAUNCH_OPTS[@]}"} "${MPICNN_CMD[@]}"
