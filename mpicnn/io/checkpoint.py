"""HDF5 checkpoints in the global (unpartitioned) layout, written atomically, checksummed.

Layout::

    /params/<name>               each parameter as one global array (names from named_parameters())
    /buffers/<name>              BatchNorm running statistics and counters
    /optimizer/<param>/<state>   optimizer state per parameter (momentum, Adam moments)
    attrs: format, step, epoch, seed, optimizer, optimizer_steps, config (JSON), sha256

The file is written to a temporary name in the same directory, fsynced and renamed, so
a crash mid-write leaves the previous checkpoint intact. ``sha256`` covers every array
(name, dtype, shape, bytes) and every other attribute; it is verified on load. Nothing
here unpickles: only numeric arrays and strings are read.

``load_checkpoint`` also reads weights in the safetensors format (``python -m
mpicnn.export``, or PyTorch's ``safetensors.torch.save_file(model.state_dict(), ...)``):
parameters and buffers by PyTorch name, no optimizer state, step 0. That is what
``--init-from`` needs to fine-tune weights trained elsewhere. A pickled PyTorch file
(``torch.save``) is refused with the command that converts it.
"""
import hashlib
import json
import os
import re

import h5py
import numpy as np

from ..errors import UserError
from .safetensors import read_safetensors

FORMAT = "mpicnn-checkpoint-1"
NAME = re.compile(r"^ckpt-(\d+)\.h5$")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# torch.save writes a zip archive of pickles (or, before PyTorch 1.6, a bare pickle).
PICKLE_SIGNATURES = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
# Names of PyTorch buffers among a state_dict's tensors (BatchNorm); the rest are parameters.
BUFFER_NAMES = ("running_mean", "running_var", "num_batches_tracked")


def _digest(arrays, attrs):
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    h.update(json.dumps(attrs, sort_keys=True).encode())
    return h.hexdigest()


def _flatten(params, buffers, optimizer):
    arrays = {f"params/{n}": a for n, a in params.items()}
    arrays.update({f"buffers/{n}": np.asarray(a) for n, a in buffers.items()})
    for pname, states in optimizer.get("params", {}).items():
        arrays.update({f"optimizer/{pname}/{s}": a for s, a in states.items()})
    return arrays


def save_checkpoint(path, params, buffers=None, optimizer=None, **meta):
    """Write a checkpoint atomically. ``meta``: step, epoch, seed, config (dict) ..."""
    optimizer = optimizer or {}
    arrays = _flatten(params, buffers or {}, optimizer)
    attrs = {"format": FORMAT, "optimizer_steps": int(optimizer.get("steps", 0))}
    for key, value in meta.items():
        attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
    attrs["sha256"] = _digest(arrays, attrs)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            for name, a in arrays.items():
                f.create_dataset(name, data=a)
            for key, value in attrs.items():
                f.attrs[key] = value
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dirfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dirfd)  # make the rename itself durable
    finally:
        os.close(dirfd)
    return path


def is_checkpoint(path):
    """Whether ``path`` is an HDF5 file of this format: what --save may replace."""
    try:
        with h5py.File(path, "r") as f:
            return _attr(f.attrs.get("format")) == FORMAT
    except OSError:
        return False


class Checkpoint:
    def __init__(self, path, params, buffers, optimizer, attrs):
        self.path, self.params, self.buffers, self.optimizer, self.attrs = path, params, buffers, optimizer, attrs

    @property
    def step(self):
        return int(self.attrs.get("step", 0))

    @property
    def config(self):
        return json.loads(self.attrs.get("config", "{}"))


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_checkpoint(path):
    """Read and verify a checkpoint (HDF5) or weights (safetensors); any problem is a
    UserError naming the file."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path!r} not found")
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(PICKLE_SIGNATURES):
        raise UserError(f"{path!r} is a pickled PyTorch file (torch.save), which mpicnn never loads: "
                        f"pickles run code. Save the weights as safetensors instead: "
                        f"safetensors.torch.save_file(model.state_dict(), 'model.safetensors')")
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    if magic != HDF5_SIGNATURE and not path.endswith(".h5"):
        try:
            return _load_safetensors(path)
        except UserError as e:
            raise UserError(f"{path!r} is neither an mpicnn checkpoint (HDF5) nor safetensors weights "
                            f"({e})") from None
    arrays = {}
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    if obj.dtype.kind not in "fiub":
                        raise UserError(f"checkpoint {path!r}: dataset {name!r} has non-numeric dtype {obj.dtype}")
                    arrays[name] = obj[()]
            f.visititems(visit)
    except OSError as e:
        raise UserError(f"checkpoint {path!r} cannot be read as HDF5 ({e}); it may be truncated, "
                        "use an earlier checkpoint")
    if attrs.get("format") != FORMAT:
        raise UserError(f"{path!r} is not an mpicnn checkpoint (format {attrs.get('format')!r}, "
                        f"expected {FORMAT!r})")
    stored = attrs.pop("sha256", None)
    if stored != _digest(arrays, attrs):
        raise UserError(f"checkpoint {path!r} is corrupt (checksum mismatch); resume from an earlier one")
    params, buffers, states = {}, {}, {}
    for name, a in arrays.items():
        group, _, rest = name.partition("/")
        if group == "params":
            params[rest] = a
        elif group == "buffers":
            buffers[rest] = a
        elif group == "optimizer":
            pname, _, state = rest.rpartition("/")
            states.setdefault(pname, {})[state] = a
    optimizer = {"steps": attrs.get("optimizer_steps", 0), "params": states}
    return Checkpoint(path, params, buffers, optimizer, attrs)


def _load_safetensors(path):
    tensors, metadata = read_safetensors(path)
    params = {n: a for n, a in tensors.items() if n.rsplit(".", 1)[-1] not in BUFFER_NAMES}
    buffers = {n: a for n, a in tensors.items() if n not in params}
    for name, a in params.items():
        if a.dtype.kind != "f":
            raise UserError(f"{path}: parameter {name!r} has dtype {a.dtype}; parameters must be "
                            f"floating point (float16, float32 or float64)")
    if not params:
        raise UserError(f"{path}: holds no parameters (tensors: {', '.join(tensors) or 'none'})")
    config = metadata.get("mpicnn.config", "{}")   # the run's options, when mpicnn exported it
    try:
        is_object = isinstance(json.loads(config), dict)
    except json.JSONDecodeError:
        is_object = False
    if not is_object:
        raise UserError(f"{path}: its metadata mpicnn.config is not a JSON object; the file is damaged")
    attrs = {"format": "safetensors", "step": 0, "config": config}
    return Checkpoint(path, params, buffers, {"steps": 0, "params": {}}, attrs)


def checkpoint_path(directory, step):
    return os.path.join(directory, f"ckpt-{step:08d}.h5")


def list_checkpoints(directory):
    """(step, path) of the checkpoints in ``directory``, oldest first."""
    if not directory or not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), os.path.join(directory, n)) for n in os.listdir(directory)
             if (m := NAME.match(n))]
    return sorted(found)


def latest_checkpoint(directory):
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory, keep):
    """Delete all but the newest ``keep`` checkpoints."""
    for _, path in list_checkpoints(directory)[:-keep]:
        os.unlink(path)
