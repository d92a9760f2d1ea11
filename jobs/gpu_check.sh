#!/usr/bin/env bash
# One command for a GPU node: the GPU tests, then the kernel benchmarks; all numbers to files.
#
#   jobs/gpu_check.sh [OUTDIR] [--full]
#
# Run from the mpicnn checkout on a node with an NVIDIA GPU, CuPy (pip install cupy-cuda12x)
# and, for the cuDNN comparison, PyTorch with CUDA. Under a scheduler, e.g.
#   srun -N1 --gpus=1 jobs/gpu_check.sh      or      bsub -gpu num=1 jobs/gpu_check.sh
#
# OUTDIR (default gpu-check-HOST-DATE) receives:
#   env.txt        nvidia-smi, Python, CuPy, CUDA and PyTorch versions
#   tests.txt      pytest output (GPU tests: tests/test_kernels*.py, test_backend*.py and
#                  test_emulator*.py, or the whole suite with --full); MPICNN_REQUIRE_GPU=1 makes every
#                  GPU-parametrised test run instead of skipping, so a missing GPU fails
#   tests.xml      the same as JUnit XML
#   layouts.txt    the MPI layout tests (data, spatial, channel, pipeline, ps, balance) on 2
#                  ranks sharing the GPU, each against its 1-rank run
#   kernels.json   the benchmark figures (python -m mpicnn.bench.kernels): achieved GB/s of
#                  the memory-bound kernels against a device-to-device copy, conv TFLOP/s
#                  against cuDNN; bench.txt is its printed table
# Exit status: 0 when the tests pass and the benchmark ran, 1 otherwise, 2 without a GPU.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
PY="${MPICNN_PYTHON:-python3}"
OUT="" FULL=0
for arg in "$@"; do
    case "$arg" in
        --full) FULL=1 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) OUT="$arg" ;;
    esac
done
OUT="${OUT:-gpu-check-$(hostname -s)-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT" || exit 2

if ! "$PY" -c 'import cupy, sys; sys.exit(0 if cupy.cuda.runtime.getDeviceCount() > 0 else 1)' 2>/dev/null; then
    echo "gpu_check: CuPy sees no GPU on $(hostname) (pip install cupy-cuda12x; check CUDA_VISIBLE_DEVICES)" >&2
    exit 2
fi

{
    nvidia-smi 2>&1 || echo "nvidia-smi not found"
    "$PY" - <<'PYEOF'
import platform, cupy, numpy
print("python", platform.python_version(), "numpy", numpy.__version__, "cupy", cupy.__version__)
print("CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), "driver", cupy.cuda.runtime.driverGetVersion())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
          "available", torch.cuda.is_available())
except ImportError:
    print("torch: not installed (no cuDNN comparison)")
PYEOF
} > "$OUT/env.txt" 2>&1

if [ "$FULL" = 1 ]; then
    tests=(tests)
else
    shopt -s nullglob
    tests=(tests/test_kernels*.py tests/test_backend*.py tests/test_emulator*.py)
    shopt -u nullglob
fi
status=0
echo "gpu_check: pytest ${tests[*]}"
MPICNN_REQUIRE_GPU=1 "$PY" -m pytest -q -rs --junitxml="$OUT/tests.xml" "${tests[@]}" 2>&1 | tee "$OUT/tests.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

# Every parallel layout on the GPU (--backend auto picks cupy): 2 ranks sharing the GPU,
# each layout against its 1-rank run, as on the CPU.
layouts=(tests/test_data_parallel.py tests/test_spatial.py tests/test_channel.py tests/test_pipeline.py
         tests/test_ps.py tests/test_micro_batches_and_balance.py)
echo "gpu_check: mpiexec -n 2 pytest --with-mpi ${layouts[*]}"
MPIEXEC="$("$PY" -c 'from mpicnn.parallel.launcher import mpiexec; print(mpiexec())')"
"$MPIEXEC" -n 2 "$PY" -m pytest -q -rs --with-mpi -m mpi -p no:cacheprovider "${layouts[@]}" \
    2>&1 | tee "$OUT/layouts.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

echo "gpu_check: python -m mpicnn.bench.kernels"
"$PY" -m mpicnn.bench.kernels --backend cupy --json "$OUT/kernels.json" 2>&1 | tee "$OUT/bench.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

echo "gpu_check: results in $OUT (status $status)"
exit "$status"
