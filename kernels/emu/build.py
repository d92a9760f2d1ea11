"""Compiles a ``.cu`` file for the CPU emulator with g++ and caches the library on disk.

The user's source is compiled as C++17 after ``cuda_emu.h``, inside a generated
wrapper that lists its kernels in a launch table (``emu_launch.h``). The runtime
(``runtime.cpp``, ``fiber.cpp``, ``check.cpp``, ``watchdog.cpp``) is compiled once into
objects and linked in.

Libraries are cached in ``$MPICNN_KERNEL_CACHE`` (default ``~/.cache/mpicnn/kernels``)
under a hash of everything that goes into them: source, options, name expressions,
the emulator's own files and the compiler version; sources with ``#include`` are
hashed after preprocessing, so an edited header is noticed. Files are written under a
temporary name and ``os.replace``d, so MPI ranks compiling the same kernel at once
are safe.
"""

import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

from ..errors import CompileError
from . import source

EMU_DIR = Path(__file__).resolve().parent
# -ffp-contract=off: no fused multiply-adds, so results match NumPy's (and a GPU built
# with --fmad=false) on every host, not only on x86-64 without -mfma.
_BASE_FLAGS = ["-x", "c++", "-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden",
               "-fno-gnu-unique", "-fno-strict-aliasing", "-ffp-contract=off"]
_RUNTIME_SOURCES = ("fiber.cpp", "runtime.cpp", "check.cpp", "watchdog.cpp")
# memcheck: every load and store of the kernel's code calls kernels/emu/check.cpp
# (kernel-address mode, so no sanitizer runtime is needed), and -g lets a report name
# the source line of the access.
_MEMCHECK_FLAGS = ["-fsanitize=kernel-address", "--param", "asan-instrumentation-with-call-threshold=0",
                   "--param", "asan-stack=0", "--param", "asan-globals=0",
                   "-fno-sanitize-address-use-after-scope", "-g"]
# racecheck: ThreadSanitizer's instrumentation instead (its __tsan_* calls are check.cpp's
# too), because AddressSanitizer checks one access per location and basic block: the
# store of `s += x` would go unseen after its load. The same bounds checks run on it.
# -fno-threadsafe-statics: the guards of static locals would be atomics (one OS thread
# runs a launch).
_RACECHECK_FLAGS = ["-fsanitize=thread", "--param", "tsan-instrument-func-entry-exit=0", "-fno-threadsafe-statics",
                    "-g"]

stats = {"compiles": 0, "disk_hits": 0}  # read by tests: a cached load compiles nothing
_lock = threading.Lock()


def cache_dir():
    default = os.path.join(os.path.expanduser("~"), ".cache", "mpicnn", "kernels")
    return Path(os.environ.get("MPICNN_KERNEL_CACHE") or default)


def compiler():
    return os.environ.get("MPICNN_EMU_CXX", "g++")


@functools.lru_cache(maxsize=None)
def _compiler_id(cxx):
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise CompileError(f"the CPU emulator needs a C++17 compiler; {cxx!r} does not run ({e}). "
                           "Install g++ or set MPICNN_EMU_CXX.") from None
    return out.stdout.splitlines()[0] if out.stdout else cxx


@functools.lru_cache(maxsize=None)
def emulator_version():
    """Hash of the emulator's own files: a change to any of them invalidates the cache."""
    h = hashlib.sha256()
    files = sorted(EMU_DIR.rglob("*.h")) + sorted(EMU_DIR.glob("*.cpp")) + \
        [EMU_DIR / "source.py", Path(__file__)]
    for f in files:
        h.update(str(f.relative_to(EMU_DIR)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _runtime_flags():
    """MPICNN_EMU_FIBERS=ucontext uses the portable fiber switch even on x86-64."""
    return ["-DEMU_FIBER_UCONTEXT"] if os.environ.get("MPICNN_EMU_FIBERS") == "ucontext" else []


def gxx_options(options):
    """The NVRTC options that matter to g++ (macros, include paths); the rest
    (architecture, fast math, line info, ...) has no meaning on a CPU and is dropped."""
    out = []
    for opt in options:
        if re.match(r"-[DUI]\S", opt):
            out.append(opt)
        elif opt.startswith(("--define-macro=", "--undefine-macro=", "--include-path=")):
            flag = {"--define-macro": "-D", "--undefine-macro": "-U", "--include-path": "-I"}
            key, value = opt.split("=", 1)
            out.append(flag[key] + value)
    return out


def library(code, display, include_dirs=(), options=(), name_expressions=(), instrumented=None):
    """Path of the compiled library for this source, compiling it if not cached;
    ``instrumented`` ("memcheck" or "racecheck") builds a variant whose every access
    calls kernels/emu/check.cpp."""
    cxx = compiler()
    text = source.rewrite_shared(code, instrumented is not None)
    flags = gxx_options(options) + [f"-I{d}" for d in include_dirs]
    if instrumented:
        flags += _RACECHECK_FLAGS if instrumented == "racecheck" else _MEMCHECK_FLAGS
    material = [emulator_version(), _compiler_id(cxx), _runtime_flags(), display, text, flags,
                list(name_expressions)]
    with _lock:
        cdir = cache_dir()
        cdir.mkdir(parents=True, exist_ok=True)
        if "#include" not in code:  # the usual case: a cache hit touches nothing
            final = cdir / f"emu-{_key(material)}.so"
            if final.exists():
                stats["disk_hits"] += 1
                return final
        with tempfile.TemporaryDirectory(dir=cdir, prefix="build-") as work:
            work = Path(work)
            src = work / "src.cu"
            quoted = display.replace("\\", "\\\\").replace('"', '\\"')
            src.write_text(f'#line 1 "{quoted}"\n{text}')
            pre = None
            if "#include" in code:  # what the includes hold is part of the library
                pre = _preprocess(cxx, src, flags, display, work)
                material.append(pre)
            final = cdir / f"emu-{_key(material)}.so"
            if final.exists():
                stats["disk_hits"] += 1
                return final
            if pre is None:
                pre = _preprocess(cxx, src, flags, display, work)
            entries = source.find_kernels(pre)  # (name for get_function, C++ expression)
            entries += [(expr, expr) for expr in name_expressions if expr not in dict(entries)]
            wrapper = work / "wrapper.cpp"
            wrapper.write_text(_wrapper_text(display, entries))
            objects = [_runtime_object(cxx, cdir, name) for name in _RUNTIME_SOURCES]
            tmp = work / "lib.so"
            if instrumented == "racecheck":  # compiled apart: linking with -fsanitize=thread adds libtsan
                code_object = work / "wrapper.o"
                _run([cxx, *_BASE_FLAGS, f"-I{EMU_DIR}", *flags, "-c", "-o", str(code_object), str(wrapper)],
                     display, work, entries)
                _run([cxx, "-shared", "-Wl,-z,defs", "-o", str(tmp), str(code_object), *map(str, objects)],
                     display, work, entries)
            else:
                _run([cxx, *_BASE_FLAGS, "-shared", "-Wl,-z,defs", f"-I{EMU_DIR}", *flags,
                      "-o", str(tmp), str(wrapper), "-x", "none", *map(str, objects)],
                     display, work, entries)
            os.replace(tmp, final)
            stats["compiles"] += 1
            return final


def _key(material):
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:24]


def _wrapper_text(display, entries):
    lines = [f"// Generated by kernels/emu/build.py around {display}: its kernels and launchers.",
             '#include "cuda_emu.h"', '#include "src.cu"', '#include "emu_launch.h"',
             "const __emu_entry __emu_table[] = {"]
    for name, expr in entries:
        lines.append(f"    EMU_KERNEL_ENTRY({json.dumps(name)}, &{expr}),")
    lines += ["    {nullptr, nullptr, nullptr}};", f"const int __emu_table_size = {len(entries)};", ""]
    return "\n".join(lines)


def _preprocess(cxx, src, flags, display, work):
    cmd = [cxx, "-E", "-P", "-x", "c++", "-std=c++17", "-D__EMU_PARSE_ONLY", f"-I{EMU_DIR}", *flags,
           "-include", str(EMU_DIR / "cuda_emu.h"), str(src)]
    return _run(cmd, display, work, [])


def _runtime_object(cxx, cdir, name):
    flags = _runtime_flags()
    key = hashlib.sha256(f"{emulator_version()}\0{_compiler_id(cxx)}\0{name}\0{flags}".encode()).hexdigest()[:16]
    obj = cdir / f"emu-runtime-{Path(name).stem}-{key}.o"
    if not obj.exists():
        fd, tmp = tempfile.mkstemp(dir=cdir, suffix=".o.tmp")
        os.close(fd)
        try:
            _run([cxx, *_BASE_FLAGS, *flags, f"-I{EMU_DIR}", "-c", "-o", tmp, str(EMU_DIR / name)],
                 f"kernels/emu/{name}", cdir, [])
            os.replace(tmp, obj)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return obj


def _run(cmd, display, work, entries):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(explain(proc.stderr, display, work, entries), log=proc.stderr)
    return proc.stdout


# ---- turning g++'s output into a message about the user's file ---------------------

_DIAG = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:\d+:)? (?P<kind>fatal error|error|warning|note): ")
_SNIPPET = re.compile(r"^\s+(\d+\s+)?\|")
_ASM_SENTINEL = "mpicnn_emulator_cannot_run_inline_PTX_asm"


def explain(log, display, work, entries):
    """A short message: what went wrong, at which line of the user's file."""
    work = str(work) + os.sep
    lines = [ln.replace(work, "") for ln in log.splitlines()]
    headline = None
    kept = []
    keep_snippet = False
    for ln in lines:
        m = _DIAG.match(ln)
        if m:
            keep_snippet = m["kind"] in ("error", "fatal error") or m["file"] == display
            if keep_snippet:
                kept.append(ln)
            if headline is None and m["file"] == "wrapper.cpp" and m["kind"] == "error":
                headline = _wrapper_error(int(m["line"]), entries, display)
        elif _SNIPPET.match(ln):
            if keep_snippet:
                kept.append(ln)
        else:
            keep_snippet = False
            if ln.startswith(display + ":"):  # "In function ...", "required from here"
                kept.append(ln)
    where = _user_location(lines, display, _ASM_SENTINEL)
    if _ASM_SENTINEL in log:
        headline = (f"{where}: inline PTX asm cannot run on the CPU emulator; put it under "
                    "#ifdef __CUDA_ARCH__ with a portable #else branch (the emulator does not "
                    "define __CUDA_ARCH__)")
    elif "Assembler messages" in log:
        headline = (f"{display}: inline assembly that is not x86-64 (PTX asm) cannot run on the CPU "
                    "emulator; put it under #ifdef __CUDA_ARCH__ with a portable #else branch")
    elif "mpicnn emulator:" in log:
        reason = re.search(r"mpicnn emulator: ([^\"\n]*)", log).group(1).rstrip("\"' ")
        site = next((m.group(0) for ln in lines if "required from" in ln
                     for m in [re.match(re.escape(display) + r":\d+", ln)] if m), display)
        headline = f"{site}: {reason}"
    if not kept:
        kept = lines[-25:]
    body = "\n".join(kept[:30] + (["..."] if len(kept) > 30 else []))
    head = headline or f"{display}: g++ could not compile it for the CPU emulator"
    return f"{head}\n{body}"


def _user_location(lines, display, marker):
    """``file:line`` of the user's code nearest before the first line holding `marker`."""
    where = display
    for ln in lines:
        m = re.match(re.escape(display) + r":\d+", ln)
        if m:
            where = m.group(0)
        if marker in ln:
            return where
    return where


def _wrapper_error(line, entries, display):
    """Errors in the launch table come from a bad name expression."""
    first_entry_line = 6  # see _wrapper_text
    k = line - first_entry_line
    if 0 <= k < len(entries):
        return (f"{display}: name expression {entries[k][0]!r} does not name a kernel "
                "(a __global__ function or template instantiation) of this file")
    return None
