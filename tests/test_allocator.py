"""The trainer keeps freed memory for reuse (mpicnn/allocator.py): a step's pattern of
arrays made and freed faults no pages in again, where glibc's defaults fault them every
time; MPICNN_MALLOC=system leaves malloc alone."""
import os
import platform
import subprocess
import sys

import pytest

STEP = """
import resource, numpy as np
from mpicnn import allocator
print(allocator.tune())
def step():
    a = np.ones(3 * 2**18); b = np.ones(2**20); c = np.ones(2**17)
    del b
    d = np.ones(2**21); del a; del d; del c
step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 20)
"""


def faults_per_step(**env):
    proc = subprocess.run([sys.executable, "-c", STEP], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    tuned, faults = proc.stdout.split()
    return tuned == "True", float(faults)


def test_freed_arrays_are_reused_not_faulted_in_again():
    if platform.libc_ver()[0] != "glibc" and os.environ.get("CI") != "true":
        pytest.skip(f"malloc tuning is for glibc; this is {platform.libc_ver()[0] or 'another C library'}")
    tuned, faults = faults_per_step()
    untouched, system_faults = faults_per_step(MPICNN_MALLOC="system")
    assert tuned and not untouched
    assert faults < 5 < 50 < system_faults, (faults, system_faults)


def test_the_trainer_tunes_malloc_before_it_runs(monkeypatch):
    import mpicnn.train as train
    calls = []
    monkeypatch.setattr(train.allocator, "tune", lambda: calls.append("tune"))
    monkeypatch.setattr(train, "mpi_main", lambda work, argv: calls.append("run"))
    train.main([])
    assert calls == ["tune", "run"]
