#!/bin/bash
#flux: --job-name=mpicnn
#flux: -N 1
#flux: -n 2
#flux: -t 60m
#flux: --output=mpicnn-{{id}}.out
# Flux. Run as a batch job; arguments go to mpicnn.train:
#   flux batch jobs/flux.sh --model resnet20 --epochs 5
#   flux batch -N 2 -n 8 -g 1 -t 4h jobs/flux.sh --epochs 5     # 8 ranks, a GPU each
# Submitting again continues from the newest checkpoint in runs/mpicnn.
# The ranks run as one job inside the batch instance: one per GPU of it with a GPU each (flux
# hides GPUs from jobs that did not ask for them), else one per core; MPICNN_NP to change. It is
# submitted with --signal=USR1@MPICNN_WARN (default 120 s): USR1 that long before the batch
# job's time limit, the trainer writes a checkpoint and exits 0. Signals sent to this script
# reach the ranks through `flux job kill`. Open MPI needs flux's pmix plugin:
# MPICNN_LAUNCHER_ARGS="-o pmi=pmix". More settings: jobs/common.sh.
set -euo pipefail
for MPICNN_JOBS_DIR in "${MPICNN_JOBS_DIR:-}" "$(dirname "$0")" "$PWD/jobs"; do
    if [ -f "$MPICNN_JOBS_DIR/common.sh" ]; then break; fi
done
[ -f "$MPICNN_JOBS_DIR/common.sh" ] || { echo "mpicnn: jobs/common.sh not found; set MPICNN_JOBS_DIR" >&2; exit 1; }
# shellcheck source=common.sh
source "$MPICNN_JOBS_DIR/common.sh"

mpicnn_setup "${MPICNN_JOB_NAME:-mpicnn}" "$@"
read -r cores gpus < <(flux resource list --states=up --no-header --format='{ncores} {ngpus}' |
                       awk '{c += $1; g += $2} END {print c + 0, g + 0}')
np="$cores" per_rank=()
if [ "$gpus" -gt 0 ]; then
    np="$gpus" per_rank=(-g 1)
fi
submit=(flux submit --job-name=mpicnn -n "${MPICNN_NP:-$np}" ${per_rank[@]+"${per_rank[@]}"}
        --signal="USR1@${MPICNN_WARN:-120}"
        ${MPICNN_LAUNCH_OPTS[@]+"${MPICNN_LAUNCH_OPTS[@]}"} "${MPICNN_CMD[@]}")
mpicnn_log "${submit[@]}"
jobid=$("${submit[@]}")
mpicnn_signal_launcher() {
    flux job kill --signal="$1" "$jobid" 2>/dev/null || true
}
mpicnn_run flux job attach "$jobid"
