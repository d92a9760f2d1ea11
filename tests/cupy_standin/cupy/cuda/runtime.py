"""``cupy.cuda.runtime`` of the stand-in: device count and properties of the pretend device."""
from .. import standin


class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount():
    return standin.device_count()


def getDevice():
    from . import _current
    return _current[0]


def setDevice(device):
    from . import Device
    Device(device).use()


def deviceSynchronize():
    standin.synchronized()


def getDeviceProperties(device):
    return {"name": b"cupy test stand-in (host memory, CPU emulator; not a GPU)",
            "totalGlobalMem": 0, "major": 8, "minor": 0, "multiProcessorCount": 1}


def runtimeGetVersion():
    return 12000


def driverGetVersion():
    return 12000
