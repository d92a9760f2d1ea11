#!/bin/bash
#BSUB -J mpicnn
#BSUB -n 2
#BSUB -W 01:00
#BSUB -o mpicnn-%J.out
# IBM Spectrum LSF. Arguments go to mpicnn.train (bsub reads #BSUB lines only from stdin,
# so give resources on the command line when passing arguments):
#   bsub -n 4 -o mpicnn-%J.out jobs/lsf.sh --epochs 5
set -euo pipefail
cd "${LS_SUBCWD:-.}"
source "${MPICNN_JOBS_DIR:-${LS_SUBCWD:-.}/jobs}/common.sh"
exec mpirun -n "${LSB_DJOB_NUMPROC:-${MPICNN_NP:-2}}" "$MPICNN_PYTHON" -m mpicnn.train "$@"
