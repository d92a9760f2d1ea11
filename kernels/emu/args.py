"""Kernel parameter signatures and argument checks for the emulator.

Each compiled kernel exports its parameter types as codes (see ``emu_launch.h``):
``f`` float, ``i`` int, ... (NumPy type codes), ``pf:16:16`` a pointer to float data
aligned to 16 bytes, 16 bytes an element (``float4*``), ``V8`` a struct of 8 bytes
passed by value.

An argument is accepted when a GPU, given it through CuPy, would read the intended
value; otherwise it is a TypeError naming the kernel, the position and both types.
CuPy passes a Python ``int`` as int64 and a Python ``float`` as float64, so a Python
float for a ``float`` parameter, which a GPU would read as garbage, is refused here.
An array for a pointer must be C-contiguous (a kernel indexes it as a flat row-major
block: ``x[:, ::2]`` or ``x.T`` would be read wrongly) and hold a whole number of the
pointee (a ``float4*`` needs a multiple of 4 floats).
"""

import ctypes
from dataclasses import dataclass

import numpy as np

C_NAMES = {"?": "bool", "c": "char", "b": "signed char", "B": "unsigned char", "h": "short",
           "H": "unsigned short", "i": "int", "I": "unsigned int", "l": "long",
           "L": "unsigned long", "q": "long long", "Q": "unsigned long long", "f": "float",
           "d": "double", "v": "void", "V": "struct"}
_CTYPES = {"?": ctypes.c_bool, "c": ctypes.c_byte, "b": ctypes.c_byte, "B": ctypes.c_ubyte,
           "h": ctypes.c_short, "H": ctypes.c_ushort, "i": ctypes.c_int, "I": ctypes.c_uint,
           "l": ctypes.c_long, "L": ctypes.c_ulong, "q": ctypes.c_longlong,
           "Q": ctypes.c_ulonglong, "f": ctypes.c_float, "d": ctypes.c_double}
_ANY_POINTEE = "cBvV"  # char*, unsigned char*, void*, struct*: raw memory of any dtype


@dataclass(frozen=True)
class Param:
    pointer: bool
    code: str   # scalar code of the value or pointee
    size: int   # bytes of a by-value struct
    align: int  # required alignment of a pointer's target
    elem: int = 1  # bytes of a pointer's target (16 for float4*)

    @classmethod
    def parse(cls, text):
        if text.startswith("p"):
            code, align, elem = text[1:].split(":")
            return cls(True, code, 0, int(align), int(elem))
        if text.startswith("V"):
            return cls(False, "V", int(text[1:]), 1)
        return cls(False, text, 0, 1)

    def __str__(self):
        if self.code == "V" and not self.pointer:
            return f"struct of {self.size} bytes"
        base = C_NAMES[self.code]
        if not self.pointer:
            return base
        lanes = self.elem // self.dtype().itemsize if self.code in C_NAMES and self.code != "V" else 1
        if lanes > 1:  # a CUDA vector type: float4*, int2*
            return f"{base}{lanes}*" if " " not in base else f"{base} x{lanes}*"
        return base + "*"

    def dtype(self):
        return np.dtype("int8" if self.code == "c" else self.code)


def parse_signature(text):
    return [Param.parse(p) for p in text.split(",")] if text else []


def describe(value):
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array"
    if isinstance(value, np.generic):
        return f"numpy.{type(value).__name__} {value.item()!r}"
    return f"Python {type(value).__name__} {value!r}"


def convert(kernel, index, param, value):
    """A ctypes object holding `value` as the kernel reads parameter `index`."""
    where = f"kernel {kernel!r}: args[{index}] should be {param}"
    if param.pointer:
        return _pointer(where, param, value)
    if isinstance(value, (np.ndarray, list, tuple)) or value is None:
        raise TypeError(f"{where} (a scalar), got {describe(value)}")
    if param.code == "V":
        return _struct(where, param, value)
    if param.code in "fd":
        return _float(where, param, value)
    return _integer(where, param, value)


def _pointer(where, param, value):
    if value is None:
        return ctypes.c_void_p(None)
    if isinstance(value, ctypes.c_void_p):  # a raw address the caller vouches for
        return value
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{where} (an array), got {describe(value)}")
    if param.code not in _ANY_POINTEE:
        want = param.dtype()
        same_int = want.kind in "iu" and value.dtype.kind in "iu" and want.itemsize == value.dtype.itemsize
        if value.dtype != want and not same_int:
            raise TypeError(f"{where} (a {want} array), got {describe(value)}")
    if not value.flags.c_contiguous:
        layout = "Fortran-ordered (a transpose?)" if value.flags.f_contiguous else "a strided view"
        raise TypeError(f"{where} (a C-contiguous array), got {describe(value)} of shape {value.shape} that "
                        f"is {layout}; the kernel would read it as a flat row-major block: pass "
                        "numpy.ascontiguousarray(...)")
    if value.nbytes % param.elem:
        raise TypeError(f"{where}, whose elements are {param.elem} bytes, got {describe(value)} of "
                        f"{value.nbytes} bytes, not a whole number of them")
    address = value.ctypes.data
    if address % param.align:
        raise TypeError(f"{where}: the array's data at 0x{address:x} is not aligned to "
                        f"{param.align} bytes, which the kernel's {param} requires")
    return ctypes.c_void_p(address)


def _float(where, param, value):
    want = np.dtype(param.code)
    if isinstance(value, np.floating) and value.dtype == want:
        return _CTYPES[param.code](value)
    if param.code == "d" and isinstance(value, float) and not isinstance(value, np.generic):
        return ctypes.c_double(value)
    if isinstance(value, float) and not isinstance(value, np.generic):
        hint = (f"; CuPy would pass it as a double, which a float parameter reads as garbage: "
                f"pass numpy.float32({value!r})")
    else:
        hint = f"; pass numpy.{want.name}(...)"
    raise TypeError(f"{where} (numpy.{want.name}), got {describe(value)}{hint}")


def _integer(where, param, value):
    # CuPy passes Python ints and bools as int64; a GPU reads the parameter's low bytes,
    # which is right when the value fits. A narrower argument leaves garbage above it.
    if isinstance(value, (bool, np.bool_)):
        value, size = int(value), (8 if isinstance(value, bool) else 1)
    elif isinstance(value, np.integer):
        size = value.dtype.itemsize
    elif isinstance(value, int):
        size = 8
    else:
        raise TypeError(f"{where}, got {describe(value)}")
    want = param.dtype()
    if size < want.itemsize:
        raise TypeError(f"{where} ({want.itemsize} bytes), got {describe(value)} of {size} bytes; "
                        f"pass numpy.{want.name}(...)")
    if param.code == "?":
        lo, hi = 0, 1
    else:
        info = np.iinfo(want)
        lo, hi = int(info.min), int(info.max)
    if not lo <= int(value) <= hi:
        raise TypeError(f"{where}, got {describe(value)}, out of its range [{lo}, {hi}]")
    return _CTYPES[param.code](int(value))


def _struct(where, param, value):
    raw = bytes(value) if isinstance(value, (bytes, bytearray, memoryview, np.void)) else None
    if raw is None or len(raw) != param.size:
        got = f"{len(raw)} bytes" if raw is not None else describe(value)
        raise TypeError(f"{where} (pass a numpy structured scalar or bytes of {param.size} bytes), "
                        f"got {got}")
    buf = (ctypes.c_longdouble * ((param.size + 15) // 16 or 1))()  # 16-byte aligned storage
    ctypes.memmove(buf, raw, param.size)
    return buf
