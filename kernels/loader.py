"""The kernel files shipped in this package: ``load("conv")`` -> RawModule of conv.cu.

A file names the template instantiations it wants with lines of the form
``// @instantiate relu_fwd<float>`` (one per line); ``load`` passes them as
``name_expressions``, so ``load("activation").get_function("relu_fwd<float>")``
works without repeating them, and the NVRTC check compiles them too.
"""

import re
import threading
from pathlib import Path

from .errors import KernelNotFound
from .module import RawModule

KERNEL_DIR = Path(__file__).resolve().parent
_INSTANTIATE = re.compile(r"^[ \t]*//[ \t]*@instantiate[ \t]+(.+?)[ \t]*$", re.M)
_loaded = {}
_lock = threading.Lock()


def available():
    """Names of the shipped kernel files (``kernels/<name>.cu``)."""
    return sorted(p.stem for p in KERNEL_DIR.glob("*.cu"))


def declared_instantiations(code):
    """The ``// @instantiate EXPR`` lines of a source, in order."""
    return tuple(_INSTANTIATE.findall(code))


def kernel_path(name):
    path = KERNEL_DIR / f"{name}.cu"
    if not re.fullmatch(r"\w+", name) or not path.is_file():
        have = ", ".join(available()) or "none yet"
        raise KernelNotFound(f"no kernel file {name!r} (looked for {path}); available: {have}")
    return path


def load(name, options=(), name_expressions=()):
    """The RawModule of ``kernels/<name>.cu``, memoized per (name, options, expressions).

    ``name_expressions`` add to the instantiations the file declares.
    """
    key = (name, tuple(options), tuple(name_expressions))
    with _lock:
        module = _loaded.get(key)
        if module is None:
            path = kernel_path(name)
            declared = declared_instantiations(path.read_text())
            extra = tuple(e for e in name_expressions if e not in declared)
            module = _loaded[key] = RawModule(path=path, options=options,
                                              name_expressions=declared + extra)
        return module
