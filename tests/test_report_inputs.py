"""python -m mpicnn.report on inputs it must refuse or tolerate: traces of different
runs, untraced windows, layouts without a comparable straggler, unusable --out, badly
named or cut-off files; and a second report into the same --out."""
import json
import shutil
import subprocess
import sys

import pytest

from launch import ROOT, mpi_env, run_mpi
from mpicnn.report.analyse import straggler
from test_report import report, require

TRAIN = ["-m", "mpicnn.train", "--no-progress", "--eval-every", "1000"]


def train(path, ranks, *args):
    """A traced run (with a metrics file in the trace directory); returns the trace directory."""
    trace = path / "trace"
    argv = [*TRAIN, "--trace", str(trace), "--metrics", str(trace / "m.jsonl"), *args]
    if ranks == 1:
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300,
                              env=mpi_env(), cwd=ROOT)
    else:
        proc = run_mpi(ranks, *argv)
    assert proc.returncode == 0, proc.stderr
    return trace


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two 2-rank runs and a 1-rank run, each tracing steps 5-14 of 20."""
    base = tmp_path_factory.mktemp("runs")
    window = ["--steps", "20", "--trace-steps", "5:15"]
    return {name: train(base / name, ranks, *window) for name, ranks in (("a", 2), ("b", 2), ("one", 1))}


def refused(proc, *words):
    """One line ``mpicnn: error: ...`` naming ``words``, exit status 2, no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("mpicnn: error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr
    return proc.stderr


def mix(directory, *files):
    directory.mkdir()
    for f in files:
        shutil.copy(f, directory / f.name)
    return directory


# ---- the straggler ----------------------------------------------------------------

def test_no_straggler_between_pipeline_stages(tmp_path):
    trace = train(tmp_path, 2, "--steps", "20", "--parallel", "pipeline=2", "--micro-batches", "4",
                  "--trace-steps", "5:20")
    proc = report(str(trace), "--json", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    analysis = json.loads(proc.stdout)
    assert analysis["straggler"] is None and "pipeline stages" in analysis["straggler_note"]
    assert analysis["pipeline_bubble"]["stages"] == 2
    printed = report(str(trace), "--no-plots").stdout
    assert "straggler: not compared: pipeline stages do different work" in printed


class Rank:
    """A trace with only exchange phases, arriving at ``arrivals[step]``."""

    def __init__(self, rank, arrivals):
        self.rank, self.info = rank, {"role": "DataParallel"}
        self.phases = [{"cat": "phase", "name": "exchange", "ts": ts, "args": {"step": step}}
                       for step, ts in arrivals.items()]

    def track(self, name):
        return self.phases


def test_a_faster_rank_is_never_named_the_straggler():
    # Rank 1 is last at every collective but computes half as long as rank 0.
    traces = [Rank(0, {1: 0.0, 2: 10.0}), Rank(1, {1: 5.0, 2: 15.0})]
    per_step = {0: {1: {"compute": 2.0}, 2: {"compute": 2.0}}, 1: {1: {"compute": 1.0}, 2: {"compute": 1.0}}}
    found, note = straggler(traces, per_step)
    assert found is None and "rank 1" in note and "no longer" in note
    per_step[1] = {1: {"compute": 4.0}, 2: {"compute": 4.0}}
    found, note = straggler(traces, per_step)
    assert found["rank"] == 1 and found["factor"] == 2.0 and note is None
