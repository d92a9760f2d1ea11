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


# ---- traces of one run only -------------------------------------------------------

def test_traces_of_runs_of_different_sizes_are_refused(runs, tmp_path):
    # rank0 of a later 1-rank run beside rank1 of an earlier 2-rank run: was "2 rank(s)".
    mixed = mix(tmp_path / "mixed", runs["one"] / "rank0.trace.json", runs["a"] / "rank1.trace.json")
    refused(report(str(mixed), "--no-plots"), "different runs", "rank0.trace.json", "rank1.trace.json")
    assert not (mixed / "report").exists()


def test_traces_of_two_runs_of_one_size_are_refused(runs, tmp_path):
    mixed = mix(tmp_path / "mixed", runs["a"] / "rank0.trace.json", runs["b"] / "rank1.trace.json")
    refused(report(str(mixed), "--no-plots"), "different runs", "run_id")
    # traces written before the run id: the ranks' steps do not overlap in time
    for f in mixed.glob("rank*.trace.json"):
        doc = json.loads(f.read_text())
        del doc["distributedInfo"]["run_id"]
        f.write_text(json.dumps(doc))
    refused(report(str(mixed), "--no-plots"), "different runs", "do not overlap in time")


def test_a_rank_twice_and_a_missing_rank_are_refused(runs, tmp_path):
    refused(report(str(runs["a"]), str(runs["b"]), "--no-plots"), "different runs", "run_id")
    copy = mix(tmp_path / "copy", *sorted(runs["a"].glob("rank*.trace.json")))  # the same run, twice
    refused(report(str(runs["a"]), str(copy), "--no-plots"), "rank 0 twice", str(copy))
    refused(report(str(runs["a"] / "rank1.trace.json"), "--no-plots"), "rank(s) 0 of 2 missing")


def test_a_window_that_traced_no_step_is_refused(tmp_path):
    # stopped (a TERM at step 3) before its window 10:20: the traces hold no step
    trace = tmp_path / "trace"
    proc = subprocess.run([sys.executable, *TRAIN, "--steps", "30", "--trace", str(trace)], capture_output=True,
                          text=True, timeout=300, env=dict(mpi_env(), MPICNN_INJECT_FAULT="term@step3"), cwd=ROOT)
    assert proc.returncode == 0 and "stopped by" in proc.stdout, proc.stdout + proc.stderr
    refused(report(str(trace), "--no-plots"), "no training steps were traced", "--trace-steps 10:20",
            "--trace-steps A:B")
    assert not (trace / "report").exists()


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


# ---- files in and out -------------------------------------------------------------

def test_unusable_out_is_one_line(runs, tmp_path):
    refused(report(str(runs["one"]), "--no-plots", "--out", "/proc/mpicnn-report"), "cannot write",
            "/proc/mpicnn-report")
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(report(str(runs["one"]), "--no-plots", "--out", str(afile)), "is a file")
    assert afile.read_text() == "x"


def test_bad_input_writes_no_output_directory(runs, tmp_path):
    bad = mix(tmp_path / "bad", runs["one"] / "rank0.trace.json")
    (bad / "rank0.trace.json").write_text((runs["one"] / "rank0.trace.json").read_text()[:3000])
    # The file that is cut off is named, and neither --out nor the default report/ is made.
    refused(report(str(bad), "--no-plots", "--out", str(tmp_path / "new" / "out")),
            str(bad / "rank0.trace.json"), "unreadable trace")
    refused(report(str(bad), "--no-plots"), str(bad / "rank0.trace.json"))
    assert not (tmp_path / "new").exists() and not (bad / "report").exists()


def test_a_trace_file_not_named_rank_n_is_named(runs, tmp_path):
    odd = tmp_path / "rank_a.trace.json"
    shutil.copy(runs["one"] / "rank0.trace.json", odd)
    refused(report(str(odd), "--no-plots"), str(odd), "rank<N>.trace.json")
    refused(report(str(tmp_path), "--no-plots"), str(odd))


def test_metrics_cut_off_at_the_end_garbled_inside_or_empty(runs, tmp_path):
    lines = (runs["one"] / "m.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) >= 3
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-1]) + lines[-1][:20])  # a run killed while writing its last record
    proc = report(str(cut), "--json", "--no-plots", "--out", str(tmp_path / "cut"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"mpicnn: {cut}: skipped its last line ({len(lines)}), cut off: "
                                        f"the run stopped while writing it"]
    assert json.loads(proc.stdout)["ranks"] == 0
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text("".join(lines[:1]) + lines[1][:20] + "\n" + "".join(lines[2:]))
    refused(report(str(garbled), "--no-plots", "--out", str(tmp_path / "g")), f"{garbled}, line 2")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    refused(report(str(empty), "--no-plots", "--out", str(tmp_path / "e")), "nothing to report", str(empty))
    assert not (tmp_path / "g").exists() and not (tmp_path / "e").exists()


def test_a_second_report_leaves_none_of_the_first_ones_plots(runs, tmp_path):
    require("matplotlib")
    out = tmp_path / "out"
    proc = report(str(runs["one"]), "--out", str(out), "--hta")
    assert proc.returncode == 0, proc.stderr
    assert {"training.png", "breakdown.png", "timeline.png", "merged.trace.json"} <= {p.name for p in out.iterdir()}
    assert (out / "hta" / "rank0.trace.json").exists()
    proc = report(str(runs["one"] / "m.jsonl"), "--out", str(out))  # the metrics file alone
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "training.png"]
    metrics_only = (out / "report.json").read_text()
    trace_only = mix(tmp_path / "traces", runs["one"] / "rank0.trace.json")
    proc = report(str(trace_only), "--no-plots", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not (out / "training.png").exists() and (out / "report.json").read_text() != metrics_only
