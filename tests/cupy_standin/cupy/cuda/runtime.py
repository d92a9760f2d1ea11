"""``cupy.cuda.runtime`` of the stand-in: device count and selection, and what
``mpicnn.bench.kernels`` reports about a device (a name that says it is no GPU, and
CUDA runtime version 0: there is none)."""
from .. import standin


class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount():
    return standin.device_count()


def getDevice():
    from . import _current
    return _current[0]


def getDeviceProperties(device):
    return {"name": b"cupy test stand-in (host memory, CPU emulator; not a GPU)"}


def runtimeGetVersion():
    return 0
