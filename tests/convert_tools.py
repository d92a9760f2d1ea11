"""Helpers of the ``convert`` tests: run the command, check its one-line errors and that a
failed conversion leaves no file (nor a temporary one) behind."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run_convert(*args, timeout=120):
    """``python -m mpicnn.data convert ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "mpicnn.data", "convert", *map(str, args)],
                          capture_output=True, text=True, env=env(), timeout=timeout)


def assert_refused(result, out, *words):
    """Exit status 2, stderr one line ``mpicnn: error: ...`` holding ``words``, and
    nothing written next to ``out``: neither the file nor a temporary one."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpicnn: error: "), result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    left = [n for n in os.listdir(os.path.dirname(os.fspath(out))) if n.startswith(os.path.basename(os.fspath(out)))]
    assert left == [], left


def stored(path, split="train"):
    """(uint8 or float images as stored, targets, file attributes) of a converted file."""
    with h5py.File(path, "r") as f:
        g = f[split]
        target = next(k for k in ("labels", "targets", "masks") if k in g)
        return np.asarray(g["images"]), np.asarray(g[target]), dict(f.attrs)


_PEAK = """
import json, sys, tracemalloc
import mpicnn.data.writer as writer
writer.BLOCK_BYTES = int(sys.argv[1])
from mpicnn.data.__main__ import main
if sys.argv[2] == "trace":
    tracemalloc.start()
rc = main(["convert", *sys.argv[3:]])
# VmHWM, not ru_maxrss: that one keeps the peak of the process before exec (the test's)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rc": rc, "peak": tracemalloc.get_traced_memory()[1], "rss": hwm * 1024}))
"""


def convert_memory(how, block_bytes, *args):
    """Peak memory in bytes of ``convert ARGS`` with read blocks of ``block_bytes``, in a
    fresh process: ``how="trace"``: of Python and NumPy allocations (tracemalloc);
    ``how="rss"``: the peak RSS (VmHWM, without tracemalloc's bookkeeping). The peak RSS
    includes libhdf5's own caches and free lists, which grow with the number of chunks
    written up to a bound (h5py alone writing 1,000 / 10,000 / 30,000 one-sample chunks:
    44 / 55 / 55 MB), so RSS is compared between sizes past that bound."""
    r = subprocess.run([sys.executable, "-c", _PEAK, str(block_bytes), how, *map(str, args), "--force"],
                       capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, r.stdout + r.stderr
    return result["peak"] if how == "trace" else result["rss"]
