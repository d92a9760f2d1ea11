"""The real trainer with ``--backend cupy`` on the CuPy stand-in, under MPI: every layout equals
the 1-rank NumPy run, a step moves only the batch in and scalars out, every MPI call on a
device buffer comes after a stream sync, checkpoints cross between the cupy and NumPy paths.

Run by tests/test_cupy_standin.py as
``PYTHONPATH=tests/cupy_standin:. mpiexec -n 2 python -m pytest --with-mpi tests/cupy_standin/checks_train.py``
(and ``-n 3`` for the parameter-server layout).
"""
import os
import shutil
import sys
import tempfile

import pytest
from mpi4py import MPI

import cupy
from cupy import standin

from mpicnn import train
from mpicnn.training.batches import Batches
from mpicnn.parallel import device_buffers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from contract import agreed_max, max_rel_diff, on_ranks  # noqa: E402

assert getattr(cupy, "IS_STANDIN", False), "these checks need tests/cupy_standin first on PYTHONPATH"
pytestmark = pytest.mark.mpi(min_size=2)

COMMON = ["--steps", "3", "--no-progress", "--eval-batch-size", "1000"]
LENET = ["--model", "lenet5", "--batch-size", "16", "--micro-batches", "2"]
CONVNET = ["--model", "convnet", "--width", "4", "--dataset", "shapes:20:64", "--batch-size", "6"]
LAYOUTS = {  # --parallel -> (ranks, model and data)
    "serial": (1, LENET), "data=2": (2, LENET), "spatial=2x1": (2, CONVNET),
    "channel=2": (2, CONVNET), "pipeline=2": (2, LENET), "ps=1": (3, LENET)}
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}


def layout_param(layout, *marks):
    needs = pytest.mark.mpi(min_size=LAYOUTS[layout][0])
    return pytest.param(layout, marks=(needs,) + marks, id=layout)


@pytest.fixture
def cuda_aware(monkeypatch, request):
    """``True``: MPI is CUDA-aware (the stand-in lets it read device arrays and mpicnn hands
    them over); ``False``: it is not, and mpicnn stages device buffers through the host."""
    flag = "1" if request.param else "0"
    monkeypatch.setenv("MPICNN_CUDA_AWARE", flag)
    monkeypatch.setenv("CUPY_STANDIN_CUDA_AWARE_MPI", flag)
    device_buffers.cuda_aware.cache_clear()
    yield request.param
    device_buffers.cuda_aware.cache_clear()


def argv_of(layout, dtype):
    return LAYOUTS[layout][1] + COMMON + ["--dtype", dtype]


def cupy_run(layout, dtype, comm, extra=()):
    """(global parameters, stand-in events) of the cupy-path run of ``layout``."""
    parallel = [] if layout == "serial" else ["--parallel", layout]
    mark = standin.mark()
    params = train.run(argv_of(layout, dtype) + parallel + list(extra) + ["--backend", "cupy"], comm).params
    return params, standin.since(mark)


def numpy_reference(layout, dtype, extra=()):
    return train.run(argv_of(layout, dtype) + list(extra) + ["--backend", "numpy"], MPI.COMM_SELF).params


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", [layout_param(name) for name in LAYOUTS])
def test_cupy_path_equals_numpy(layout, dtype):
    """Each layout on the cupy path equals the 1-rank NumPy run after 3 steps, and no
    implicit device->host conversion was attempted (each raises on the stand-in)."""
    implicit = []

    def compare(comm):
        ref = numpy_reference(layout, dtype)
        got, events = cupy_run(layout, dtype, comm)
        implicit.append(standin.count("implicit", events))
        return max_rel_diff(got, ref)

    worst = agreed_max(on_ranks(LAYOUTS[layout][0], compare))
    assert worst < TOLERANCE[dtype], f"{layout} {dtype}: max relative difference {worst:.3g}"
    assert agreed_max(sum(implicit)) == 0


@pytest.mark.parametrize("cuda_aware", [True], indirect=True)
@pytest.mark.parametrize("layout", [layout_param(name) for name in LAYOUTS if name != "serial"])
def test_stream_synced_before_every_mpi_call_on_a_device_buffer(layout, cuda_aware):
    """With a CUDA-aware MPI, device buffers go to MPI directly: the stand-in records
    every time MPI takes a device pointer and whether device work was still queued."""
    counts = {}

    def check(comm):
        ref = numpy_reference(layout, "float64")
        got, events = cupy_run(layout, "float64", comm)
        mpi = [e for e in events if e.kind in ("mpi", "mpi_refused")]
        counts["unsynced"] = sum(1 for e in mpi if not e.synced or e.kind == "mpi_refused")
        counts["device"] = len(mpi)
        for e in mpi:
            if not e.synced:
                print(f"MPI took a device buffer with work queued: {e.where}", file=sys.stderr)
        return max_rel_diff(got, ref)

    assert agreed_max(on_ranks(LAYOUTS[layout][0], check)) < TOLERANCE["float64"]
    assert agreed_max(counts.get("unsynced", 0)) == 0
    if layout != "ps=1":  # the parameter server copies every tensor to the host itself
        assert -agreed_max(-counts.get("device", 1)) > 0, "no device buffer reached MPI"


def step_events(monkeypatch, steps, layout="data=2", micro_batches="1"):
    """Run ``steps`` steps of lenet5 (global batch 64) on the cupy path; returns (the
    stand-in events of each whole step, the layout). A step runs from reading its batch
    to reading the next one."""
    layouts = []
    make, read = train.make_layout, Batches.next_batch

    def made(*args):
        layouts.append(make(*args))
        return layouts[-1]

    def noted(self, step, reader=None):
        standin.note("step")
        return read(self, step, reader)

    monkeypatch.setattr(train, "make_layout", made)
    monkeypatch.setattr(Batches, "next_batch", noted)
    argv = ["--model", "lenet5", "--batch-size", "64", "--micro-batches", micro_batches, "--steps", str(steps),
            "--no-progress", "--eval-batch-size", "1000", "--dtype", "float32", "--parallel", layout,
            "--backend", "cupy"]
    mark = standin.mark()
    train.run(argv, MPI.COMM_WORLD.Split(MPI.COMM_WORLD.Get_rank() // 2))
    per_step, current = [], None
    for e in standin.since(mark):
        if e.kind == "note":
            current = []
            per_step.append(current)
        elif current is not None:
            current.append(e)
    return per_step[:-1], layouts[0]  # the last one runs on into the final evaluation


# This rank's half of the batch of 64: float32 images, int64 labels.
IMAGES, LABELS = 32 * 28 * 28 * 4, 32 * 8


@pytest.mark.parametrize("cuda_aware", [True, False], indirect=True)
def test_step_copies_the_batch_in_and_scalars_out(monkeypatch, cuda_aware):
    """Per step, host->device: the images and the labels; device->host: the loss and
    correct count (one copy) and the finiteness of the summed gradients (one copy), plus,
    when MPI is not CUDA-aware, each gradient bucket out and back around its allreduce.
    Nothing else: the correct count comes from the loss, not from a copy of the logits."""
    steps, layout = step_events(monkeypatch, 4)
    buckets = [b.flat.nbytes for b in layout.buckets.buckets]
    staging = [] if cuda_aware else buckets
    for events in steps:
        h2d = sorted(e.nbytes for e in events if e.kind == "h2d")
        d2h = sorted(e.nbytes for e in events if e.kind == "d2h")
        assert h2d == sorted([IMAGES, LABELS] + staging), [(e.kind, e.nbytes, e.where) for e in events]
        assert d2h == sorted([1, 16] + staging), [(e.kind, e.nbytes, e.where) for e in events]
        kinds = [e.kind for e in events if e.kind in ("sync", "d2h", "mpi")]
        for i, e in enumerate(events):  # a staged bucket leaves the device after a sync
            if e.kind == "d2h" and e.nbytes in staging:
                assert events[i - 1].kind == "sync", kinds
    assert standin.count("implicit") == 0


@pytest.mark.parametrize("layout", [layout_param("serial"), layout_param("data=2")])
@pytest.mark.parametrize("writer,reader", [("cupy", "numpy"), ("numpy", "cupy")])
def test_checkpoints_cross_between_cupy_and_numpy(layout, writer, reader):
    """A checkpoint written after 2 steps on one path, resumed for a 3rd step on the
    other, equals 3 straight NumPy steps (float64; a constant learning rate, so that
    the 2-step run's schedule is the 3-step run's)."""
    ranks = LAYOUTS[layout][0]
    constant = ["--schedule", "constant"]

    def resume(comm):
        ref = numpy_reference(layout, "float64", constant)
        directory = comm.bcast(tempfile.mkdtemp() if comm.Get_rank() == 0 else None)
        parallel = [] if layout == "serial" else ["--parallel", layout]
        argv = argv_of(layout, "float64") + constant + parallel + ["--checkpoint-dir", directory]
        try:
            train.run(argv + ["--steps", "2", "--checkpoint-every", "2", "--backend", writer], comm)
            got = train.run(argv + ["--steps", "3", "--resume", "--backend", reader], comm).params
        finally:
            comm.Barrier()
            if comm.Get_rank() == 0:
                shutil.rmtree(directory)
        return max_rel_diff(got, ref)

    assert agreed_max(on_ranks(ranks, resume)) < TOLERANCE["float64"]


def test_each_rank_takes_its_node_local_device(monkeypatch):
    """With 2 devices, each of 2 ranks on a node uses device node-local rank % 2."""
    monkeypatch.setenv("CUPY_STANDIN_DEVICES", "2")
    seen = []
    fit = train.fit

    def noted(layout):
        seen.append(cupy.cuda.runtime.getDevice())
        return fit(layout)

    monkeypatch.setattr(train, "fit", noted)
    comm = MPI.COMM_WORLD.Split(MPI.COMM_WORLD.Get_rank() // 2)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    expected = [node.Get_rank() % 2]
    node.Free()
    train.run(["--steps", "1", "--batch-size", "16", "--no-progress", "--eval-batch-size", "1000",
               "--parallel", f"data={comm.Get_size()}", "--backend", "cupy"], comm)
    comm.Free()
    assert agreed_max(float(seen != expected)) == 0
