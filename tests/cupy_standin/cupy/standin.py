"""The stand-in's record of what a GPU run would do at the host/device boundary.

Everything here is specific to the test stand-in (real CuPy has no ``cupy.standin``):

    events        every transfer, stream synchronisation, device pointer handed to a
                  foreign library (MPI) and refused implicit conversion, in order
    launches      device operations queued so far (kernels, elementwise ops, GEMMs)
    mark()/since(m)  the events after a mark, for counting per step
    note(label)   a marker event a test puts between phases (e.g. one per step)

Work is "pending" on the device from the moment an operation is queued until a
synchronisation (``Stream.synchronize``, ``Device.synchronize``, or a blocking copy to
the host); a device pointer read by MPI while work is pending is recorded with
``synced=False``: on a GPU, MPI would read memory the kernels have not written yet.

Environment:
  CUPY_STANDIN_DEVICES=N          devices ``cuda.runtime.getDeviceCount()`` reports (1)
  CUPY_STANDIN_CUDA_AWARE_MPI=1   emulate a CUDA-aware MPI: MPI may read device arrays
                                  (default: it may not, as with an MPI built without CUDA)
"""
import os
import sys
import traceback
from dataclasses import dataclass

BANNER = ("cupy: this is mpicnn's CuPy TEST STAND-IN (tests/cupy_standin), not a GPU: arrays "
          "live in host memory and kernels run on the CPU emulator")
_HERE = os.path.dirname(os.path.abspath(__file__))
_PASS_THROUGH = os.path.join("mpicnn", "backend.py")  # its asarray/to_host only pass arrays on


@dataclass(frozen=True)
class Event:
    kind: str        # h2d, d2h, sync, mpi, mpi_refused, implicit, note
    nbytes: int = 0
    where: str = ""  # file:line function of the first caller outside the stand-in
    synced: bool = True  # for mpi: no device work was pending when MPI got the pointer
    label: str = ""


events = []
launches = 0
_pending = False
_announced = False


def announce():
    """Say once per process, on stderr, that this is not a GPU."""
    global _announced
    if not _announced:
        _announced = True
        print(BANNER, file=sys.stderr, flush=True)


def device_count():
    return int(os.environ.get("CUPY_STANDIN_DEVICES", "1"))


def cuda_aware_mpi():
    return os.environ.get("CUPY_STANDIN_CUDA_AWARE_MPI", "0") == "1"


def caller():
    """file:line function of the innermost frame outside the stand-in and mpicnn.backend."""
    for frame in reversed(traceback.extract_stack()):
        path = os.path.abspath(frame.filename)
        if not path.startswith(_HERE) and not path.endswith(_PASS_THROUGH):
            return f"{frame.filename}:{frame.lineno} {frame.name}"
    return "?"


def queued():
    """A device operation was queued on the stream."""
    global launches, _pending
    launches += 1
    _pending = True


def synchronized(record=True):
    """The host waited for the device: nothing is pending any more."""
    global _pending
    _pending = False
    if record:
        events.append(Event("sync", where=caller()))


def transfer(kind, nbytes):
    """A copy between host and device; a copy to the host waits for the device first."""
    if kind == "d2h":
        synchronized(record=False)
    else:
        queued()
    events.append(Event(kind, int(nbytes), caller()))


def mpi_read(nbytes):
    """MPI (or another foreign library) took a device pointer through
    ``__cuda_array_interface__``. Returns whether that is allowed."""
    allowed = cuda_aware_mpi()
    events.append(Event("mpi" if allowed else "mpi_refused", int(nbytes), caller(), not _pending))
    if not allowed:
        print("cupy stand-in: a device array was handed to MPI, which is not CUDA-aware here: on a "
              f"GPU it would read device memory from the host ({caller()}); stage it through a host "
              "buffer, or set CUPY_STANDIN_CUDA_AWARE_MPI=1 to emulate a CUDA-aware MPI", file=sys.stderr)
    return allowed


def implicit(what):
    events.append(Event("implicit", where=caller(), label=what))


def note(label):
    events.append(Event("note", where=caller(), label=str(label)))


def mark():
    return len(events)


def since(mark_):
    return events[mark_:]


def count(kind, evs=None):
    return sum(1 for e in (events if evs is None else evs) if e.kind == kind)


def reset():
    global launches
    events.clear()
    launches = 0
    synchronized(record=False)
