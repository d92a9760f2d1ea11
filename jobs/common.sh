# shellcheck shell=bash
# Sourced (bash) by the job scripts in this folder; see jobs/README.md.
#   mpicnn_setup JOBNAME [ARGS...]  sets MPICNN_CMD (what every rank runs) and MPICNN_LAUNCH_OPTS
#   mpicnn_run LAUNCHER...          logs and runs the launcher in the background, forwards the
#                                   scheduler's signals to it and returns its exit status
# Settings, all optional, from the environment of the job:
#   MPICNN_PYTHON          the python that has mpicnn installed (default python3)
#   MPICNN_CHECKPOINT_DIR  checkpoints; the job resumes from the newest one (default runs/JOBNAME)
#   MPICNN_AUTO_RESUME=0   start from step 0 and do not add --checkpoint-dir/--resume
#   MPICNN_ARGS            more trainer arguments, split at whitespace (for qsub -v, bsub < script)
#   MPICNN_NP              number of ranks (default: what the scheduler allocated)
#   MPICNN_THREADS         BLAS/OpenMP threads per rank (default 1: the ranks already fill the cores)
#   MPICNN_LAUNCHER_ARGS   extra options for mpirun/srun/flux submit, split at whitespace
#   MPICNN_FORWARD_SIGNAL  what USR1, TERM and INT sent to the job script become for the
#                          launcher (default USR1: Open MPI's mpirun kills ranks soon after
#                          forwarding TERM, USR1 it only forwards; mpicnn checkpoints on either)
# GPUs: nothing here touches CUDA_VISIBLE_DEVICES. Every rank sees the GPUs of its node and
# picks GPU (node-local rank mod count) itself, so ask the scheduler for as many ranks per node
# as GPUs per node.

MPICNN_PYTHON="${MPICNN_PYTHON:-python3}"
MPICNN_THREADS="${MPICNN_THREADS:-1}"
# Exported for the launcher; the ranks get them again through MPICNN_CMD (`env ...`), whichever
# launcher starts them and whether or not it passes the environment on to other nodes.
export OMP_NUM_THREADS="$MPICNN_THREADS" OPENBLAS_NUM_THREADS="$MPICNN_THREADS" \
    MKL_NUM_THREADS="$MPICNN_THREADS" PYTHONUNBUFFERED=1

mpicnn_setup() {
    local name="${1//[^A-Za-z0-9._-]/_}" extra=()  # a job name may hold / and spaces
    shift
    read -r -a extra <<< "${MPICNN_ARGS:-}"
    # shellcheck disable=SC2034  # used by the job scripts
    read -r -a MPICNN_LAUNCH_OPTS <<< "${MPICNN_LAUNCHER_ARGS:-}"
    MPICNN_CMD=(env "OMP_NUM_THREADS=$MPICNN_THREADS" "OPENBLAS_NUM_THREADS=$MPICNN_THREADS"
                "MKL_NUM_THREADS=$MPICNN_THREADS" PYTHONUNBUFFERED=1 "$MPICNN_PYTHON" -m mpicnn.train)
    # Auto-resume goes first: a --checkpoint-dir or --resume PATH of the user comes later and wins.
    if [ "${MPICNN_AUTO_RESUME:-1}" != 0 ]; then
        MPICNN_CMD+=(--checkpoint-dir "${MPICNN_CHECKPOINT_DIR:-runs/$name}" --resume)
    fi
    # ${a[@]+"${a[@]}"}: an empty array under set -u, also on bash < 4.4
    MPICNN_CMD+=(${extra[@]+"${extra[@]}"} "$@")
}

_mpicnn_signals=0
_mpicnn_forward() {
    _mpicnn_signals=$((_mpicnn_signals + 1))
    local to="${MPICNN_FORWARD_SIGNAL:-USR1}"
    echo "mpicnn: job script got SIG$1, sending SIG$to to the launcher (pid $_mpicnn_pid)" >&2
    mpicnn_signal_launcher "$to"
}

# flux.sh replaces this with `flux job kill`.
mpicnn_signal_launcher() {
    kill -s "$1" "$_mpicnn_pid" 2>/dev/null || true
}

mpicnn_log() {
    echo "mpicnn: $(date '+%F %T') on $HOSTNAME:$(printf ' %q' "$@")" >&2
}

mpicnn_run() {
    mpicnn_log "$@"
    "$@" &
    _mpicnn_pid=$!
    local sig rc seen last=""
    for sig in USR1 TERM INT; do
        # shellcheck disable=SC2064  # $sig is meant to expand now
        trap "_mpicnn_forward $sig" "$sig"
    done
    while :; do
        seen=$_mpicnn_signals
        wait "$_mpicnn_pid" && rc=0 || rc=$?
        # A trapped signal ends `wait` early (status > 128) while the launcher still runs:
        # wait again. Once bash has reported the launcher, `wait` says 127; keep the status.
        if [ "$rc" = 127 ] && [ -n "$last" ]; then rc=$last; break; fi
        if [ "$rc" -gt 128 ] && [ "$_mpicnn_signals" != "$seen" ]; then last=$rc; continue; fi
        break
    done
    trap - USR1 TERM INT
    return "$rc"
}
