"""The safetensors format, read and written with NumPy alone (no dependency)::

    8 bytes   N: the header's length, unsigned 64-bit little-endian
    N bytes   JSON: {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
                     ..., "__metadata__": {str: str}}  (padded with spaces)
    the rest  every tensor's bytes, little-endian, C order, back to back; offsets count
              from the first byte after the header

It holds only numbers, so loading one runs no code (a PyTorch ``.pt`` is a pickle, which
mpicnn never loads). Reading checks everything the header claims against the file and
raises a ``UserError`` naming the file and the problem.
"""
import json
import math
import os
import struct

import numpy as np

from ..errors import UserError
from .atomic import atomic_file

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}
MAX_HEADER = 100_000_000   # the reference implementation's limit


def write_safetensors(path, tensors, metadata=None, overwrite=True):
    """Write ``tensors`` (name -> array) and string ``metadata`` to ``path`` atomically."""
    header, offset, arrays = {}, 0, []
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dtype not in CODES:
            raise UserError(f"{path}: tensor {name!r} has dtype {a.dtype}, which safetensors cannot hold "
                            f"here; use one of {', '.join(sorted(str(d) for d in CODES))}")
        a = np.asarray(a, dtype=dtype, order="C")      # (ascontiguousarray would make 0-d arrays 1-d)
        header[name] = {"dtype": CODES[dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)    # keeps the tensors 8-byte aligned, as the reference writer does
    with atomic_file(path, overwrite) as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for a in arrays:
            f.write(a.reshape(-1).view(np.uint8).data)
    return path


def read_safetensors(path):
    """(name -> array, metadata) of a safetensors file, every claim of its header checked."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise UserError(f"{path}: not a safetensors file: {size} bytes, shorter than its 8-byte "
                                f"header length (truncated?)")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise UserError(f"{path}: not a safetensors file, or truncated: its header claims {n} bytes "
                                f"but the file has {size - 8} after the length field")
            text = f.read(n)
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"weights file {path!r} not found") from None
    except OSError as e:
        raise UserError(f"cannot read {path!r}: {e}") from None
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: the safetensors header is not valid JSON ({e}); the file is damaged") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: the safetensors header is not a JSON object; the file is damaged")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise UserError(f"{path}: __metadata__ must map strings to strings; the file is damaged")
    entries = [(name, *_entry(path, name, info)) for name, info in header.items()]
    _check_layout(path, entries, len(data))
    tensors = {name: np.frombuffer(data, dtype, count=math.prod(shape), offset=begin).reshape(shape).copy()
               for name, dtype, shape, begin, _ in entries}
    return tensors, metadata


def _entry(path, name, info):
    """(dtype, shape, begin, end) of one header entry, or a UserError saying what is wrong."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise UserError(f"{path}: tensor {name!r}: expected dtype, shape and data_offsets, got {info!r}")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if code not in DTYPES:
        hint = " (bfloat16: save float32 instead, e.g. {k: v.float() for k, v in state.items()})" \
            if code == "BF16" else ""
        raise UserError(f"{path}: tensor {name!r} has dtype {code!r}, which mpicnn does not read; "
                        f"use one of {', '.join(DTYPES)}{hint}")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise UserError(f"{path}: tensor {name!r} has shape {shape!r}; expected a list of whole numbers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        raise UserError(f"{path}: tensor {name!r} has data_offsets {offsets!r}; expected [begin, end]")
    dtype = np.dtype(DTYPES[code])
    if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
        raise UserError(f"{path}: tensor {name!r}: shape {shape} of {code} needs "
                        f"{math.prod(shape) * dtype.itemsize} bytes, but its data_offsets hold "
                        f"{offsets[1] - offsets[0]}; the header's shape or dtype is wrong")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _check_layout(path, entries, available):
    """The tensors must tile the data exactly: no gap, no overlap, nothing cut off."""
    end = 0
    for name, _, _, begin, stop in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin != end:
            raise UserError(f"{path}: tensor {name!r} starts at byte {begin}, expected {end} "
                            f"(overlapping or gapped data); the file is damaged")
        end = stop
    if end > available:
        raise UserError(f"{path}: truncated: the tensors need {end} bytes of data, the file holds {available}")
    if end < available:
        raise UserError(f"{path}: {available - end} bytes after the last tensor; the file is damaged")
