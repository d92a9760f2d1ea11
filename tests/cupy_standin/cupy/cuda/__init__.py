"""``cupy.cuda`` of the stand-in: one (or CUPY_STANDIN_DEVICES) pretend device, streams
whose synchronisations are recorded, events timed on the host clock, memory pools that
count the bytes of live device arrays. No NVRTC: ``kernels.nvrtc`` reports it missing under
the stand-in (the suite's NVRTC checks run with the real CuPy)."""
import time
import weakref

from .. import standin
from . import compiler, driver, runtime  # noqa: F401 - cupy.cuda.driver as in CuPy

_current = [0]


class Device:
    def __init__(self, device=None):
        self.id = _current[0] if device is None else int(device)

    def use(self):
        if not 0 <= self.id < runtime.getDeviceCount():
            raise runtime.CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        _current[0] = self.id

    def synchronize(self):
        standin.synchronized()

    def __enter__(self):
        self._previous = _current[0]
        self.use()
        return self

    def __exit__(self, *exc):
        _current[0] = self._previous

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id} (cupy test stand-in, not a GPU)>"


class Stream:
    """A CUDA stream; the stand-in runs every operation at once, so streams only keep
    the record of who waited for the device."""

    null = None  # set below

    def __init__(self, null=False, non_blocking=False, ptr=None):
        self.ptr = 0 if null else id(self)

    def synchronize(self):
        standin.synchronized()

    def use(self):
        _stream[0] = self
        return self

    def __enter__(self):
        self._previous = _stream[0]
        return self.use()

    def __exit__(self, *exc):
        _stream[0] = self._previous


Stream.null = Stream(null=True)
_stream = [Stream.null]


def get_current_stream():
    return _stream[0]


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()

    def synchronize(self):
        standin.synchronized()


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events (host clock: the stand-in runs in order)."""
    if start_event.time is None or end_event.time is None:
        raise runtime.CUDARuntimeError("cudaErrorInvalidResourceHandle: event not recorded")
    return (end_event.time - start_event.time) * 1e3


class MemoryPointer:
    def __init__(self, ptr):
        self.ptr = ptr

    def __int__(self):
        return self.ptr


class MemoryPool:
    """Bytes of the device arrays alive (the stand-in frees at once: total == used)."""

    def __init__(self):
        self._used = 0

    def _allocated(self, array):
        nbytes = array.nbytes
        self._used += nbytes
        weakref.finalize(array, self._freed, nbytes)

    def _freed(self, nbytes):
        self._used -= nbytes

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._used

    def free_all_blocks(self, stream=None):
        """Nothing to free: the stand-in gives memory back as soon as an array dies."""


_pool = MemoryPool()


def get_default_memory_pool():
    return _pool
