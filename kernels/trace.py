"""Kernel launch tracing: with ``MPICNN_TRACE_KERNELS=1`` every launch is counted and
timed per kernel, and a table is printed to stderr at interpreter exit.

Emulator launches are timed on the host. GPU launches are timed with CUDA events
recorded around the launch; they are read when the table is made, so tracing does
not synchronise the stream after every launch.
"""

import atexit
import os
import sys
import threading

_stats = {}     # (kernel, backend) -> [launches, milliseconds]
_pending = []   # (kernel, backend, start event, end event) of GPU launches not read yet
_lock = threading.Lock()


def enabled():
    return os.environ.get("MPICNN_TRACE_KERNELS", "") not in ("", "0")


def record(kernel, backend, ms):
    with _lock:
        entry = _stats.setdefault((kernel, backend), [0, 0.0])
        entry[0] += 1
        entry[1] += ms


def record_gpu(kernel, start, end):
    with _lock:
        _pending.append((kernel, "gpu", start, end))
        if len(_pending) < 4096:
            return
    _read_pending()  # keep the number of live events bounded


def _read_pending():
    with _lock:
        pending, _pending[:] = list(_pending), []
    if pending:
        import cupy
        for kernel, backend, start, end in pending:
            end.synchronize()
            record(kernel, backend, cupy.cuda.get_elapsed_time(start, end))


def trace_table():
    """``[(kernel, backend, launches, total_ms), ...]``, the most time first."""
    _read_pending()
    with _lock:
        rows = [(k, b, n, ms) for (k, b), (n, ms) in _stats.items()]
    return sorted(rows, key=lambda r: (-r[3], r[0]))


def reset_trace():
    _read_pending()
    with _lock:
        _stats.clear()


def format_table(rows=None):
    rows = trace_table() if rows is None else rows
    width = max([len("kernel")] + [len(r[0]) for r in rows])
    lines = [f"{'kernel':<{width}}  backend  launches   total ms    mean ms"]
    for kernel, backend, n, ms in rows:
        lines.append(f"{kernel:<{width}}  {backend:<7}  {n:>8}  {ms:>9.3f}  {ms / n:>9.4f}")
    return "\n".join(lines)


def _print_at_exit():
    if not enabled():
        return
    try:
        rows = trace_table()
    except Exception:  # the GPU may be gone at exit; print what was read
        rows = sorted(((k, b, n, ms) for (k, b), (n, ms) in _stats.items()), key=lambda r: -r[3])
    if rows:
        print(f"kernel launches (pid {os.getpid()}):\n{format_table(rows)}", file=sys.stderr)


atexit.register(_print_at_exit)
