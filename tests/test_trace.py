"""--trace DIR: per-rank trace files of real runs (valid JSON, nested tracks, aligned
clocks, size), and what the report reads from them: the straggler, the pipeline bubble
against the run's own figure, halos, channel collectives and weight age."""
import json
import os

import numpy as np
import pytest

from launch import mpi_env, run_mpi
from mpicnn.io.trace import Tracer, leaf_layers, parse_window
from mpicnn.report.analyse import analyse
from mpicnn.report.traces import check_nesting, load_traces, nest
from mpicnn.training.phases import PhaseClock

QUICK = ["--no-progress", "--eval-every", "1000"]


def traced_run(tmp_path, n, *args, env=None):
    """Train under mpiexec with --trace; returns (the rank traces, the run's metrics records)."""
    trace, metrics = tmp_path / "t", tmp_path / "m.jsonl"
    proc = run_mpi(n, "-m", "mpicnn.train", *QUICK, "--trace", str(trace), "--metrics", str(metrics), *args,
                   env=env)
    assert proc.returncode == 0, proc.stderr
    files = sorted(str(trace / f) for f in os.listdir(trace))
    assert [os.path.basename(f) for f in files] == [f"rank{r}.trace.json" for r in range(n)]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return load_traces(files), records


@pytest.fixture(scope="module")
def data_parallel(tmp_path_factory):
    """The default job (lenet5, mnist5k, batch 64) on 2 ranks, the default window 10:20."""
    return traced_run(tmp_path_factory.mktemp("dp"), 2, "--steps", "24")


def test_default_window_files_are_valid_nested_small_and_aligned(data_parallel):
    traces, _ = data_parallel
    for t in traces:
        assert t.info["rank"] == t.rank and t.info["world_size"] == 2
        assert t.info["grid"]["data"] == t.rank and "data=2" in t.info["layout"]
        assert sorted(t.steps()) == list(range(10, 20))
        assert os.path.getsize(t.path) <= 2 * 2 ** 20
        assert 0 <= t.info["clock_error_us"] <= 50
        check_nesting(t)
        names = {e["name"] for e in t.spans}
        assert {"data", "forward", "backward", "exchange", "optimizer", "wait allreduce",
                "allreduce bucket 0"} <= names
        layers = [e for e in t.spans if e.get("cat") == "forward"]
        assert {e["args"]["layer"] for e in layers} == {row["name"] for row in t.info["layers"]}
        assert all(e["args"]["shape"][0] == 32 for e in layers)  # this rank's half of the batch
        bucket = next(e for e in t.spans if e["name"] == "allreduce bucket 0")
        assert bucket["args"]["bytes"] == sum(row["parameter_bytes"] for row in t.info["layers"])
    assert len({t.info["run_id"] for t in traces}) == 1  # one run, one id on every rank
    a = analyse(traces)
    for rank, row in a["breakdown"].items():
        assert row["steps"] == 10 and row["compute"] > 0 and row["data"] > 0
        step = np.mean([e["dur"] for e in traces[rank].steps().values()]) / 1e6
        assert sum(row[k] for k in ("compute", "communication", "waiting", "data", "idle", "evaluation")) == \
            pytest.approx(step, rel=1e-6)  # every instant of a step counted once
    assert 0.0 <= a["allreduce_hidden_fraction"] <= 1.0


def test_a_straggler_is_named_with_its_factor(tmp_path):
    traces, _ = traced_run(tmp_path, 2, "--steps", "50", "--trace-steps", "8:48",
                           env=mpi_env(MPICNN_SLOW_RANK="1:2.0"))
    s = analyse(traces)["straggler"]
    assert s["rank"] == 1
    assert s["factor"] == pytest.approx(2.0, abs=0.3)


def test_pipeline_bubble_matches_the_runs_own_figure(tmp_path):
    # The window is the steps the run times (past its 5 warm-up steps).
    traces, records = traced_run(tmp_path, 2, "--steps", "30", "--parallel", "pipeline=2", "--micro-batches", "4",
                                 "--trace-steps", "5:30")
    measured = records[-1]["pipeline"]["bubble"]
    b = analyse(traces)["pipeline_bubble"]
    assert b["stages"] == 2 and b["micro_batches"] == 4 and b["ideal"] == pytest.approx(1 / 5)
    for stage, bubble in b["per_stage"].items():
        assert abs(bubble - measured[stage]) <= 0.05, (b, measured)
    for t in traces:
        check_nesting(t)
        assert any(e["name"].startswith("wait recv ") and "micro_batch" in e["args"] for e in t.spans)


def test_spatial_halos_and_channel_collectives_are_traced(tmp_path):
    common = ["--model", "convnet", "--width", "4", "--dataset", "shapes:16:256", "--batch-size", "8", "--steps", "6",
              "--trace-steps", "2:4"]
    traces, _ = traced_run(tmp_path / "s", 2, *common, "--parallel", "spatial=2x1")
    halo = analyse(traces)["halo"]
    conv = [row["name"] for row in traces[0].info["layers"] if row["type"] == "Conv2d"]
    assert set(conv) <= set(halo[0]) and all(halo[0][c]["bytes_per_step"] > 0 for c in conv)
    traces, _ = traced_run(tmp_path / "c", 2, *common, "--parallel", "channel=2", "--channel-split", "filter")
    collectives = [e for e in traces[0].spans if e["name"].startswith("channel ")]
    assert collectives and all(e["args"]["bytes"] > 0 and e["args"]["layer"] for e in collectives)
    for t in traces:
        check_nesting(t)


def test_parameter_server_weight_age(tmp_path):
    traces, _ = traced_run(tmp_path, 3, "--steps", "12", "--parallel", "ps=1", "--staleness", "2",
                           "--trace-steps", "3:9")
    age = analyse(traces)["ps_weight_age"]
    assert set(age) == {t.rank for t in traces if t.info["role"] == "PSWorker"} and len(age) == 2
    assert all(0 <= v["mean"] <= v["max"] <= 2 for v in age.values())
    assert any(e["name"].startswith("push step") for t in traces for e in t.spans)


# ---- the tracer alone ---------------------------------------------------------------

class Layout:
    """What Tracer.attach reads of a layout, with a two-layer model."""

    def __init__(self):
        from mpicnn import nn
        self.clock, self.layout_text = PhaseClock(), "test"
        self.model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        self.finished = False

    def finish(self, step, stopped):
        self.finished = True
        return step, stopped

    def step(self, step):
        self.clock.start_step(step)
        with self.clock.phase("forward"):
            self.model.forward(np.ones((2, 4), np.float32))


def test_tracer_records_its_window_only_and_unwraps_the_layers(tmp_path):
    layout = Layout()
    Tracer(str(tmp_path), 0, 1, (2, 4)).attach(layout)
    for step in range(6):
        layout.step(step)
        wrapped = "_forward" in vars(layout.model[0])
        assert wrapped == (2 <= step < 4)  # untraced steps run the layers' own methods
    document = json.loads((tmp_path / "rank0.trace.json").read_text())
    spans = [e for e in document["traceEvents"] if e["ph"] == "X"]
    assert sorted({e["args"]["step"] for e in spans}) == [2, 3]
    assert [e["name"] for e in spans if e["cat"] == "step"] == ["ProfilerStep#2", "ProfilerStep#3"]
    assert {e["args"]["layer"] for e in spans if e["cat"] == "forward"} == {"0", "1"}
    assert [name for name, _ in leaf_layers(layout.model)] == ["0", "1"]
    spans.sort(key=lambda e: (e["ts"], -e["dur"]))
    for e in spans:
        e["end"], e["track"] = e["ts"] + e["dur"], "compute"
    parents = nest(spans)
    assert [p["name"] if p else None for p, e in zip(parents, spans) if e["cat"] == "forward"] == ["forward"] * 4
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed


def test_tracer_writes_at_the_loops_end_and_without_steps(tmp_path):
    layout = Layout()
    tracer = Tracer(str(tmp_path / "a"), 0, 1, (1, 100)).attach(layout)
    for step in range(3):
        layout.step(step)
    layout.finish(3, None)  # the loop's end, before the window's
    assert layout.finished and tracer.written
    doc = json.loads((tmp_path / "a" / "rank0.trace.json").read_text())
    assert [e["name"] for e in doc["traceEvents"] if e.get("cat") == "step"] == ["ProfilerStep#1", "ProfilerStep#2"]
    late = Tracer(str(tmp_path / "b"), 0, 1, (50, 60)).attach(Layout())
    late.close()
    doc = json.loads((tmp_path / "b" / "rank0.trace.json").read_text())
    assert not [e for e in doc["traceEvents"] if e["ph"] == "X"]


def test_nest_rejects_overlapping_spans():
    a = {"name": "a", "ts": 0.0, "end": 10.0, "track": "compute"}
    b = {"name": "b", "ts": 5.0, "end": 15.0, "track": "compute"}
    with pytest.raises(ValueError, match="overlap without nesting"):
        nest([a, b])


@pytest.mark.parametrize("text", ["10", "a:b", "20:10", "-1:4", "5:5"])
def test_bad_trace_steps(text, tmp_path):
    with pytest.raises(ValueError, match="--trace-steps"):
        parse_window(text)
    proc = run_mpi(1, "-m", "mpicnn.train", "--steps", "2", "--trace", str(tmp_path), f"--trace-steps={text}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("mpicnn: error: --trace-steps")


def test_a_window_past_the_run_or_without_trace_is_refused(tmp_path):
    """The default window 10:20 traces nothing of a 10-step run: one line at start, not
    a trace without steps; --trace-steps without --trace would trace nothing either."""
    proc = run_mpi(2, "-m", "mpicnn.train", *QUICK, "--steps", "10", "--trace", str(tmp_path / "t"))
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("mpicnn: error: the default --trace-steps 10:20 traces none of this run's steps 0..9")
    assert "--trace-steps 0:10" in line and not (tmp_path / "t").exists()
    proc = run_mpi(1, "-m", "mpicnn.train", *QUICK, "--steps", "10", "--trace-steps", "2:4")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("mpicnn: error: --trace-steps 2:4 traces nothing without --trace")


def test_an_earlier_larger_runs_rank_files_are_removed(tmp_path):
    """A 1-rank run traced into the directory of a 2-rank run leaves no rank1 file for the
    report to mistake for its own; files that are not rank traces stay."""
    trace = tmp_path / "t"
    trace.mkdir()
    (trace / "rank1.trace.json").write_text("{}")
    (trace / "notes.txt").write_text("mine")
    proc = run_mpi(1, "-m", "mpicnn.train", *QUICK, "--steps", "4", "--trace", str(trace), "--trace-steps", "1:3")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(trace)) == ["notes.txt", "rank0.trace.json"]
    assert len(json.loads((trace / "rank0.trace.json").read_text())["distributedInfo"]["run_id"]) == 32
