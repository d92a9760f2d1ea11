"""The planner (mpicnn.plan): its JSON contract, that every layout it lists is one the
trainer accepts, planning at 1024 ranks, memory against the arrays a real run holds,
the pipeline simulation, and bad input. No timings are asserted: the machine here is a
fixed roofline description, so the figures are pure functions of the model."""
import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
from contextlib import redirect_stdout

import pytest
from mpi4py import MPI

from mpicnn import train
from mpicnn.parallel.spec import parse_parallel
from mpicnn.plan import Layout, Machine, Problem, plan, predict
from mpicnn.errors import UserError
from mpicnn.plan.__main__ import main as plan_main
from mpicnn.plan.machine import parse_bytes
from mpicnn.plan.predict import _simulate

ROOFLINE = {"nodes": 1, "ranks_per_node": 8, "memory_per_rank": 4e9, "baseline_bytes": 1.2e8,
            "compute": {"flops": 5e10, "bandwidth": 1e10, "layer_overhead": 2e-5},
            "intra": {"alpha": 5e-6, "beta": 3e-10}, "inter": {"alpha": 2e-5, "beta": 4e-11},
            "step_overhead": 1e-3}
KEYS = ("parallel", "micro_batches", "channel_split", "step_seconds", "images_per_sec",
        "memory_per_rank_bytes", "bytes_per_step", "fits")


@pytest.fixture
def machine_file(tmp_path):
    path = tmp_path / "machine.json"
    path.write_text(json.dumps(ROOFLINE))
    return str(path)


def plan_json(argv):
    out = io.StringIO()
    with redirect_stdout(out):
        assert plan_main(argv + ["--json"]) == 0
    return json.loads(out.getvalue())


def test_json_is_a_list_best_first_with_the_documented_keys(machine_file):
    records = plan_json(["--model", "convnet", "--dataset", "shapes:32", "--batch-size", "16", "--ranks", "4",
                         "--machine", machine_file])
    assert len(records) > 10
    for r in records:
        assert all(k in r for k in KEYS), r
        assert isinstance(r["fits"], bool) and isinstance(r["micro_batches"], int)
        assert r["images_per_sec"] == pytest.approx(16 / r["step_seconds"])
        assert r["channel_split"] in ((None,) if ",channel=" not in r["parallel"] else ("auto", "filter", "channel"))
    plain = [r for r in records if r["fits"] and not r["caveat"]]
    assert plain == records[:len(plain)]  # fitting layouts without a caveat come first
    steps = [r["step_seconds"] for r in plain]
    assert steps == sorted(steps)
    assert any("ps=" in r["parallel"] and r["caveat"] for r in records)


def test_a_memory_limit_marks_layouts_that_do_not_fit(machine_file):
    records = plan_json(["--model", "lenet5", "--batch-size", "64", "--ranks", "2", "--machine", machine_file,
                         "--memory-per-rank", "1MB"])
    assert records and not any(r["fits"] for r in records)
    big = plan_json(["--model", "lenet5", "--batch-size", "64", "--ranks", "2", "--machine", machine_file,
                     "--memory-per-rank", "16GB"])
    assert all(r["fits"] for r in big)


def test_the_table_names_the_recommended_flags(machine_file):
    out = io.StringIO()
    with redirect_stdout(out):
        assert plan_main(["--model", "convnet", "--dataset", "shapes:32", "--batch-size", "16", "--ranks", "2",
                          "--machine", machine_file]) == 0
    text = out.getvalue()
    assert "recommended: mpiexec -n 2 python -m mpicnn.train --model convnet" in text
    assert "--parallel " in text.splitlines()[-1]


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("model,dataset", [("convnet", "shapes:32"), ("lenet5", "mnist5k"), ("resnet8", "shapes:16")])
def test_every_listed_layout_parses_and_passes_the_trainers_checks(ranks, model, dataset):
    problem = Problem(model, dataset, 32)
    found = plan(problem, ranks, Machine(ROOFLINE))
    assert found
    flattens = model == "lenet5"
    for p in found:
        spec = parse_parallel(p.layout.parallel, ranks)  # the trainer's own parser
        assert spec == p.layout.spec
        assert 32 >= spec.data * p.layout.micro_batches  # the trainer's batch check
        assert not (flattens and spec.spatial != (1, 1))  # spatial refuses a Flatten of a map
        assert spec.pipeline <= len(problem.model.children())
    families = {p.layout.family for p in found}
    if ranks == 2:
        assert {"data", "pipeline", "ps"} <= families
        assert ("spatial" in families) == (not flattens)
        splits = {p.layout.channel_split for p in found if p.layout.spec.channel == 2}
        assert splits == {"auto", "filter", "channel"}


def test_plans_1024_ranks():
    problem = Problem("convnet", "shapes:512", 256)
    t0 = time.perf_counter()
    found = plan(problem, 1024, Machine(ROOFLINE))
    print(f"planned {len(found)} layouts for 1024 ranks in {time.perf_counter() - t0:.2f} s")
    assert len(found) > 50
    assert {p.layout.family for p in found} >= {"data+spatial", "data+channel", "data+pipeline"}


def test_pipeline_simulation_matches_the_closed_form_for_equal_stages():
    for kind in ("gpipe", "1f1b"):
        for S, M in ((2, 1), (2, 4), (4, 8), (3, 2)):
            makespan = _simulate(kind, S, M, [1.0] * S, [2.0] * S, [0.0] * (S - 1))
            assert makespan == pytest.approx((M + S - 1) * 3.0)


@pytest.mark.parametrize("argv,batch,eval_batch", [
    (["--model", "lenet5"], 64, 500),  # evaluation sets the peak
    (["--model", "convnet", "--dataset", "shapes:32"], 32, 500),
    (["--model", "convnet", "--dataset", "shapes:32"], 32, 8),  # a training step sets the peak
])
def test_predicted_arrays_match_what_a_run_allocates(argv, batch, eval_batch):
    """Peak bytes of arrays (tracemalloc sees NumPy's allocations) of a 1-rank run against
    the prediction's arrays (parameters, gradients, Adam state, activations, transient
    buffers, the data cache): within 35%."""
    full = argv + ["--batch-size", str(batch), "--steps", "3", "--no-progress", "--eval-every", str(10 ** 9),
                   "--eval-batch-size", str(eval_batch)]
    dataset = full[full.index("--dataset") + 1] if "--dataset" in full else "mnist5k"
    problem = Problem(full[1], dataset, batch, eval_batch_size=eval_batch)
    predicted = predict(problem, Layout(parse_parallel(None, 1)), Machine(ROOFLINE)).array_bytes
    train.run(full, MPI.COMM_SELF)  # builds the dataset cache files outside the measurement
    tracemalloc.start()
    try:
        train.run(full, MPI.COMM_SELF)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(predicted - peak) / peak < 0.35, (predicted, peak)


def run_plan(*argv):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "mpicnn.plan", *argv], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("argv,words", [
    (["--ranks", "0"], "--ranks"),
    (["--ranks", "2", "--machine", "/nonexistent/machine.json"], "not found"),
    (["--ranks", "2", "--memory-per-rank", "lots"], "--memory-per-rank"),
    (["--ranks", "2", "--model", "nosuchmodel"], "--model"),
    (["--ranks", "2", "--batch-size", "100000"], "--batch-size"),
    (["--ranks", "2", "--dataset", "cosmo:32"], "volumes"),
    (["--ranks", "2", "--dataset", "blobs:32", "--model", "unet"], "blobs (segmentation of 2-D images)"),
    (["--ranks", "2", "--memory-per-rank", "0"], "greater than 0"),
    (["--ranks", "2", "--memory-per-rank", "0GB"], "greater than 0"),
])
def test_bad_input_is_one_error_line_and_exit_2(argv, words, machine_file):
    if "--machine" not in argv:
        argv = argv + ["--machine", machine_file]
    proc = run_plan(*argv)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpicnn: error:") and words in lines[0], proc.stderr


def test_a_mistyped_machine_key_is_named_not_ignored(tmp_path, machine_file):
    """A misspelt key would leave its default in force without a word."""
    spec = json.load(open(os.path.join(os.path.dirname(__file__), "..", "docs", "machines", "cluster-64x4.json")))
    spec["memory_per_ranks"] = spec.pop("memory_per_rank")
    (tmp_path / "m.json").write_text(json.dumps(spec))
    proc = run_plan("--ranks", "2", "--machine", str(tmp_path / "m.json"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'memory_per_ranks'" in lines[0], proc.stderr
    assert "did you mean 'memory_per_rank'?" in lines[0]


def test_a_segmentation_file_is_not_planned_as_classification(machine_file):
    """An HDF5 file of masks (the blobs built-in's cache) is refused as the built-in is,
    not planned as if its masks were classes."""
    from mpicnn import data
    proc = run_plan("--ranks", "2", "--dataset", data.prepare("blobs:32:8"), "--model", "convnet",
                    "--machine", machine_file)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "a segmentation dataset is not modelled yet" in lines[0], proc.stderr


def test_no_machine_file_is_an_error_that_says_how_to_make_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MPICNN_MACHINE"}
    proc = subprocess.run([sys.executable, "-m", "mpicnn.plan", "--ranks", "2"], capture_output=True, text=True,
                          env=dict(env, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 2 and "mpicnn.bench calibrate" in proc.stderr


def test_planning_imports_no_mpi():
    """The planner is pure: planning (and its command line) never loads mpi4py."""
    code = ("import sys, json; from mpicnn.plan import Machine, Problem, plan; import mpicnn.plan.__main__; "
            f"plan(Problem('convnet', 'shapes:32', 16), 4, Machine(json.loads({json.dumps(json.dumps(ROOFLINE))}))); "
            "print('mpi4py' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_scaling_table_and_plot(machine_file, tmp_path):
    from tools import require_module
    require_module("matplotlib", "pip install mpicnn[plot]")
    png = tmp_path / "scaling.png"
    out = io.StringIO()
    with redirect_stdout(out):
        assert plan_main(["--model", "convnet", "--dataset", "shapes:64", "--batch-size", "32", "--ranks", "16",
                          "--machine", machine_file, "--scaling", "--plot", str(png)]) == 0
    rows = [line for line in out.getvalue().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(r.split("|")[1]) for r in rows] == [1, 4, 16]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sync_bn_adds_reductions_over_the_data_ranks():
    machine = Machine(ROOFLINE)
    layout = Layout(parse_parallel("data=2", 2))
    plain = predict(Problem("convnet", "shapes:32", 16), layout, machine)
    synced = predict(Problem("convnet", "shapes:32", 16, sync_bn=True), layout, machine)
    assert synced.comm_seconds > plain.comm_seconds
    assert synced.bytes_per_step > plain.bytes_per_step


def test_calibration_times_the_layers_as_the_layouts_cut_them():
    """A channel split's shards and a pool's local channels are configs of their own:
    the calibration times them rather than scaling a neighbour's time by its work."""
    from mpicnn.plan.walk import layout_configs
    problem = Problem("lenet5", "mnist5k", 8)
    whole = layout_configs(problem.model, problem.sample_shape, 1)
    two = layout_configs(problem.model, problem.sample_shape, 2)
    assert ("conv", {"cin": 1, "cout": 6, "k": [5, 5], "s": [1, 1], "p": [2, 2]}) in whole
    assert ("conv", {"cin": 3, "cout": 16, "k": [5, 5], "s": [1, 1], "p": [0, 0]}) not in whole
    assert ("conv", {"cin": 3, "cout": 16, "k": [5, 5], "s": [1, 1], "p": [0, 0]}) in two  # channel-split input
    pools = sorted(c["c"] for k, c in two if k == "maxpool2d")
    assert pools == [3, 6, 16]  # after the first conv's 6 channels, its split block of 3, the second's 16


def test_channel_layers_cost_what_the_machine_measured_for_their_calls():
    """With a measured ``channel`` table, a channel layout's communication is the table's
    (stretched by compute_scale, as the layers are), including the block copies a layer
    makes of a whole input or output gradient; without one, the link costs."""
    problem = Problem("lenet5", "mnist5k", 64)
    layout = Layout(parse_parallel("channel=2", 2), 1, "filter")
    plain = predict(problem, layout, Machine(ROOFLINE))
    table = {op: [{"channels": 4, "alpha": 1e-3, "beta": 0.0}, {"channels": 64, "alpha": 1e-4, "beta": 0.0}]
             for op in ("allgather", "reduce_scatter", "allreduce", "block")}
    measured = predict(problem, layout, Machine({**ROOFLINE, "channel": table}))
    stretched = predict(problem, layout, Machine({**ROOFLINE, "channel": table, "compute_scale": 2.0}))
    from mpicnn.plan.walk import walk
    leaves = walk(problem.model, layout.spec, "filter", problem.sample_shape, 64, 4)
    calls = [m for leaf in leaves for m in leaf.messages if m[3] == "channel"]
    assert any(m[1] == "block" for m in calls)  # the filter conv's block of the whole output gradient
    machine = Machine({**ROOFLINE, "channel": table})
    expected = sum(machine.channel_op(m[1], m[2], 2, m[4]) for m in calls)
    small = Machine(ROOFLINE).collective("allreduce", 64, 2)  # the step's figures
    assert measured.comm_seconds == pytest.approx(expected + small)
    assert stretched.comm_seconds == pytest.approx(2 * expected + small)
    assert measured.comm_seconds > plain.comm_seconds  # ~0.1-1 ms a call against the links' microseconds
    # Narrow arrays cost more per call than wide ones (log-linear between the counts).
    assert machine.channel_op("allgather", 0, 2, 4) > machine.channel_op("allgather", 0, 2, 16) > 1e-4


def test_resident_memory_counts_allocator_slack_and_the_cache_pages_read():
    problem = Problem("convnet", "shapes:64", 16)
    layout = Layout(parse_parallel("data=2", 2))
    tight = predict(problem, layout, Machine(ROOFLINE))
    slack = predict(problem, layout, Machine({**ROOFLINE, "allocator_slack": 1.5}))
    acts = tight.memory_parts["training_activations"]
    assert slack.training_memory_bytes - tight.training_memory_bytes == pytest.approx(0.5 * acts)
    assert slack.array_bytes == tight.array_bytes  # arrays are arrays; the slack is the heap's
    # The cache holds the pages of the samples this rank read: none before a step, all
    # once an epoch's share went by, and pages of small samples fill faster than samples.
    n = problem.num_train
    cache = tight.memory_parts["train_cache"]
    assert tight.samples_per_step == 8  # its half of the batch
    start = tight.training_memory_after(0, n)
    assert tight.training_memory_after(10 ** 6, n) - start == pytest.approx(cache)
    quarter = n // 4 // tight.samples_per_step
    share = quarter * tight.samples_per_step / n
    assert tight.training_memory_after(quarter, n) - start == pytest.approx(cache * share, rel=1e-6)  # 12 KiB samples
    lenet = predict(Problem("lenet5", "mnist5k", 16), Layout(parse_parallel(None, 1)), Machine(ROOFLINE))
    small = lenet.training_memory_after(25, 4000) - lenet.training_memory_after(0, 4000)
    assert small > 1.5 * lenet.memory_parts["train_cache"] * 0.1  # 10% of 784-byte samples touch ~40% of pages


def test_calibration_recovers_baseline_and_slack_from_two_runs():
    """``bench calibrate``'s memory fit: runs whose peaks are baseline + arrays + (slack-1)
    x activations give back that baseline and slack."""
    from mpicnn.bench.calibrate import FIT_BATCHES, FIT_STEPS, trainer_fit
    from mpicnn.parallel.spec import ParallelSpec
    runs = []
    for batch in FIT_BATCHES["lenet5"]:
        p = predict(Problem("lenet5", "mnist5k", batch, eval_batch_size=8), Layout(ParallelSpec()),
                    Machine({**ROOFLINE, "baseline_bytes": 0.0}))
        peak = 9.5e7 + p.training_memory_after(FIT_STEPS, 4000) + 0.4 * p.memory_parts["training_activations"]
        runs.append((batch, 2e-3 + 1.3 * (p.compute_seconds + p.other_seconds), peak))
    scale, seconds, baseline, slack = trainer_fit(ROOFLINE, "lenet5", "mnist5k", runs, "float32")
    assert baseline == pytest.approx(9.5e7, rel=1e-6) and slack == pytest.approx(1.4, rel=1e-6)
    assert scale == pytest.approx(1.3, rel=1e-6) and seconds == pytest.approx(2e-3, rel=1e-6)


def test_a_model_calibration_ran_is_planned_with_its_own_step_fit():
    """``trainer_fits`` apply to their model only; other models get the file's
    ``compute_scale`` and ``step_overhead``."""
    layout = Layout(parse_parallel("data=2", 2))
    fits = {"lenet5": {"compute_scale": 2.0, "step_overhead": 3e-3}}
    machine = Machine({**ROOFLINE, "trainer_fits": fits, "compute_scale": 1.25})
    for model, dataset, scale, overhead in (("lenet5", "mnist5k", 2.0, 3e-3), ("convnet", "shapes:64", 1.25, 1e-3)):
        problem = Problem(model, dataset, 32)
        fitted = predict(problem, layout, machine)
        same = predict(problem, layout, Machine({**ROOFLINE, "compute_scale": scale, "step_overhead": overhead}))
        unscaled = predict(problem, layout, Machine(ROOFLINE))
        assert fitted.step_seconds == pytest.approx(same.step_seconds, rel=1e-12)
        assert fitted.compute_seconds == pytest.approx(scale * unscaled.compute_seconds, rel=1e-12)


def test_spatial_layers_cost_what_the_machine_measured_for_their_halo_calls():
    """With a measured ``halo`` fit, a window layer's first split axis costs the fit of its
    block (stretched by compute_scale), forward and, where it computes its input gradient,
    backward; its messages still count as traffic, unchanged."""
    problem = Problem("convnet", "shapes:32", 8)
    layout = Layout(parse_parallel("spatial=2x1", 2))
    halo = {"forward": {"alpha": 1e-4, "beta": 1e-9}, "backward": {"alpha": 2e-4, "beta": 2e-9}}
    plain = predict(problem, layout, Machine(ROOFLINE))
    measured = predict(problem, layout, Machine({**ROOFLINE, "halo": halo, "compute_scale": 1.5}))
    from mpicnn.plan.walk import walk
    leaves = walk(problem.model, layout.spec, "auto", problem.sample_shape, 8, 4)
    calls = [m for leaf in leaves for m in leaf.messages if m[1].startswith("halo_")]
    assert len(calls) == 2 * 7 - 1  # 7 convolutions, the first without an input gradient
    expected = sum(1.5 * (halo[m[1][5:]]["alpha"] + halo[m[1][5:]]["beta"] * m[2]) for m in calls)
    messages = sum(Machine(ROOFLINE).message(m[4]) for m in calls)  # what the plain machine counts instead
    assert measured.comm_seconds == pytest.approx(plain.comm_seconds - messages + expected)
    assert measured.bytes_per_step == plain.bytes_per_step


def test_bench_plan_reads_a_runs_median_step_from_its_records():
    """Records of every step hold the images/s of the timed steps so far; the steps'
    own times come back from their differences (the summary record is left out)."""
    from mpicnn.bench.plan import step_seconds
    from mpicnn.warmup import warmup_steps
    batch, steps, times = 32, 12, [0.5, 0.01, 0.02, 0.03, 0.02, 0.9, 0.02]
    warmup = warmup_steps(0, steps)
    records, elapsed = [], 0.0
    for k, t in enumerate(times):
        elapsed += t
        done = warmup + k + 1
        records.append({"step": done, "lr": 1e-3, "images_per_sec": (done - warmup) * batch / elapsed})
    records.append({"step": records[-1]["step"], "final": True, "images_per_sec": records[-1]["images_per_sec"]})
    assert step_seconds(records, batch, steps) == pytest.approx(0.02)


def test_the_trainer_reports_cpu_seconds_per_step():
    """What bench plan checks the planner against: the process's CPU time per timed
    step, positive and no more than its wall time on every core allows (a total over
    the steps would be 8 times that)."""
    result = train.run(["--model", "lenet5", "--batch-size", "32", "--steps", "8", "--no-progress",
                        "--eval-every", str(10 ** 9), "--eval-batch-size", "8"], MPI.COMM_SELF)
    cpu = result.summary["cpu_seconds_per_step"]
    wall = 32 / result.summary["images_per_sec"]
    assert 0 < cpu <= 1.2 * wall * (os.cpu_count() or 1), (cpu, wall)


@pytest.mark.parametrize("content", [None, "{not json"])
def test_bench_plan_with_a_bad_machine_file_says_so_in_one_line(tmp_path, content):
    path = tmp_path / "machine.json"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "mpicnn.bench", "plan", "--machine", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mpicnn: error: machine file ") and proc.stderr.count("\n") == 1
    assert str(path) in proc.stderr and "Traceback" not in proc.stderr


CLUSTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "machines",
                       "cluster-64x4.json")


def cluster_with(tmp_path, name="machine.json", **changes):
    """The docs' cluster file with ``changes`` (a user's edit of it), written to ``name``."""
    with open(CLUSTER) as f:
        spec = json.load(f)
    path = tmp_path / name
    path.write_text(json.dumps({**spec, **changes}))
    return str(path)


@pytest.mark.parametrize("changes,key", [
    ({"intra": {"alpha": -1, "beta": 1e-12}}, "intra.alpha"),
    ({"inter": {"allreduce": {"alpha": 1e-5, "beta": float("inf")}}}, "inter.allreduce.beta"),
    ({"inter": {"allreduse": {"alpha": 1e-5, "beta": 1e-11}}}, "inter"),
    ({"intra": "fast"}, "intra"),
    ({"compute": {"flops": -1e13, "bandwidth": 1e12}}, "compute.flops"),
    ({"compute": {"flops": 0, "bandwidth": 1e12}}, "compute.flops"),
    ({"compute": {"flops": 1e13, "bandwidth": "fast"}}, "compute.bandwidth"),
    ({"compute": {"float32": {"conv": [{"config": {"cin": 3}, "points": [[64, -1e-3, 1e-3, 1e-3]]}]}}},
     "compute.float32.conv[0].points[0][1]"),
    ({"compute": {}}, "compute"),
    ({"format": "mpicnn-machine/9"}, "format"),
    ({"nodes": 0}, "nodes"),
    ({"nodes": "many"}, "nodes"),
    ({"nodes": 2.5}, "nodes"),
    ({"ranks_per_node": 0}, "ranks_per_node"),
    ({"memory_per_rank": "16XB"}, "memory_per_rank"),
    ({"memory_per_rank": 0}, "memory_per_rank"),
    ({"baseline_bytes": -1.0}, "baseline_bytes"),
    ({"allocator_slack": 0.5}, "allocator_slack"),
    ({"overlap_gradients": "yes"}, "overlap_gradients"),
    ({"step_overhead": -0.003}, "step_overhead"),
    ({"compute_scale": 0}, "compute_scale"),
    ({"trainer_fits": {"lenet5": {"compute_scale": 1.2}}}, "trainer_fits.lenet5.step_overhead"),
    ({"optimizer": {"per_tensor": 2e-5}}, "optimizer.per_byte"),
    ({"data_per_byte": -1e-10}, "data_per_byte"),
    ({"channel": {"allgather": [{"channels": 0, "alpha": 1e-6, "beta": 1e-9}]}}, "channel.allgather[0].channels"),
    ({"channel": {"gather": []}}, "channel"),
    ({"halo": {"forward": {"alpha": 1e-6}}}, "halo.forward.beta"),
    ({"extends": 3}, "extends"),
])
def test_a_machine_file_with_a_value_the_model_cannot_use_is_refused_by_key(tmp_path, changes, key):
    path = cluster_with(tmp_path, **changes)
    with pytest.raises(UserError) as e:
        Machine.load(path)
    message = str(e.value)
    assert message.startswith(f"machine file {path!r}: {key} is ") and "expected" in message, message
    assert "\n" not in message


def test_a_machine_file_may_write_its_memory_as_the_command_line_does(tmp_path):
    assert Machine.load(cluster_with(tmp_path, memory_per_rank="16GB")).memory_per_rank == 16e9
    assert Machine.load(cluster_with(tmp_path, memory_per_rank=None)).memory_per_rank is None
    assert Machine.load(CLUSTER).memory_per_rank == 40e9


def test_sizes_parse_as_the_help_says_and_none_is_zero():
    assert parse_bytes("16GB") == 16e9 and parse_bytes("512MiB") == 512 * 2 ** 20 and parse_bytes("2e9") == 2e9
    for text in ("0", "0.0GB", "0e9", "-1", "lots"):
        with pytest.raises(UserError, match="greater than 0"):
            parse_bytes(text)


def test_extends_takes_the_keys_a_file_leaves_out_and_refuses_a_loop(tmp_path):
    base = cluster_with(tmp_path, "base.json", step_overhead=0.5)
    top = tmp_path / "top.json"
    top.write_text(json.dumps({"extends": "base.json", "nodes": 2}))
    machine = Machine.load(str(top))
    assert machine.nodes == 2 and machine.step_overhead == 0.5
    with pytest.raises(UserError, match="extends is .*loop"):
        Machine.load(cluster_with(tmp_path, "self.json", extends="self.json"))
    cluster_with(tmp_path, "a.json", extends="b.json")
    b = cluster_with(tmp_path, "b.json", extends="a.json")
    with pytest.raises(UserError, match="extends is .*loop"):
        Machine.load(b)
    assert Machine.load(base).step_overhead == 0.5


@pytest.mark.parametrize("changes,words", [
    ({"intra": {"alpha": -1, "beta": 1e-12}}, "intra.alpha is -1"),
    ({"extends": "machine.json"}, "extends is"),
    ({"memory_per_rank": "16 gigs"}, "memory_per_rank"),
])
def test_plan_with_a_bad_machine_file_is_one_error_line_and_exit_2(tmp_path, changes, words):
    path = cluster_with(tmp_path, **changes)
    proc = run_plan("--model", "convnet", "--dataset", "shapes:32", "--batch-size", "32", "--ranks", "2",
                    "--machine", path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mpicnn: error: machine file {path!r}: ") and words in lines[0], \
        proc.stderr


def test_memory_per_rank_from_the_file_reaches_the_table(tmp_path):
    proc = run_plan("--model", "convnet", "--dataset", "shapes:32", "--batch-size", "32", "--ranks", "2",
                    "--machine", cluster_with(tmp_path, memory_per_rank="16GB"))
    assert proc.returncode == 0 and "memory per rank 16.0 GB" in proc.stdout, proc.stderr


def test_train_parallel_auto_with_a_bad_machine_file_exits_2_on_every_rank(tmp_path):
    from launch import run_mpi
    path = cluster_with(tmp_path, intra={"alpha": -1, "beta": 1e-12})
    proc = run_mpi(2, "-m", "mpicnn.train", "--no-progress", "--steps", "10", "--parallel", "auto", "--machine",
                   path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"mpicnn: error: machine file {path!r}: intra.alpha is -1; expected a number >= 0 (seconds) "
                     f"(keys: mpicnn/plan/machine.py)"], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "predicted" not in proc.stdout
