"""``python -m mpicnn.bench`` refuses bad values at start: one line ``mpicnn: error: ...``
on stderr, exit status 2, no traceback, no file written, and within seconds (nothing
ran)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(*args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    # a bench that ran would take far longer than this: the timeout is the "nothing ran" check
    return subprocess.run([sys.executable, "-m", "mpicnn.bench", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def assert_refused(result, *words):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpicnn: error: "), result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert result.stdout == ""  # no table: no bench ran


BAD = [
    (["cnn", "--repeats", "0"], ["--repeats", "> 0"]),
    (["cnn", "--repeats", "-1"], ["--repeats", "> 0"]),
    (["zoo", "--repeats", "x"], ["--repeats", "whole number"]),
    (["scaling", "--steps", "0"], ["--steps", "> 0"]),
    (["scaling", "--scaling-repeats", "0"], ["--scaling-repeats"]),
    (["spatial", "--spatial-steps", "0"], ["--spatial-steps"]),
    (["spatial", "--spatial-repeats", "-3"], ["--spatial-repeats"]),
    (["spatial", "--batch", "0"], ["--batch"]),
    (["balance", "--slow-factor", "0.5"], ["--slow-factor", ">= 1"]),
    (["balance", "--slow-factor", "inf"], ["--slow-factor"]),
    (["balance", "--slow-factor", "nan"], ["--slow-factor"]),
    (["scaling", "--ranks", "0", "--steps", "10"], ["--ranks", "> 0"]),
    (["scaling", "--ranks", "1,,2"], ["--ranks", "'1,,2'"]),
    (["scaling", "--ranks", "a"], ["--ranks", "'a'"]),
    (["scaling", "--ranks", "1,1"], ["--ranks", "twice"]),
    (["scaling", "--ranks", "1,200"], ["--ranks 200", "at most 128"]),
    (["trace", "--ranks", "0"], ["--ranks"]),
    (["spatial", "--sizes", "256,0"], ["--sizes"]),
    (["spatial", "--grids", "2x"], ["--grids", "'2x'"]),
    (["spatial", "--grids", "2x1x1"], ["--grids 2x1x1", "PxQ"]),
    (["spatial", "--volumes", "--grids", "2x1"], ["--grids 2x1", "PxQxR"]),
    (["channel", "--channels", "-2"], ["--channels"]),
    (["calibrate", "--dtypes", "float16"], ["--dtypes"]),
    (["zoo", "--models", "foo"], ["--models: unknown foo"]),
    (["zoo", "--models", "lenet5,"], ["--models", "empty name"]),
    (["augment", "--models", "resnet8"], ["--models: the augment bench runs lenet5, convnet"]),
    (["calibrate", "--models", "lenet5,nosuch"], ["--models: unknown model 'nosuch'"]),
    (["calibrate", "--models", "nopackage.mod:build"], ["--models: cannot import 'nopackage.mod'"]),
    (["plan", "--cases", "no-such-case"], ["--cases", "matches no case"]),
    (["plan", "--machine", ""], ["--machine is empty"]),
    (["nonsense"], ["invalid choice"]),
    (["cnn", "--compare", "numpy"], ["--compare"]),
]


@pytest.mark.parametrize("args, words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_value_is_one_line_exit_2_before_any_run(tmp_path, args, words):
    assert_refused(run_bench(*args, cwd=tmp_path), *words)
    assert os.listdir(tmp_path) == []  # not even bench-results/


@pytest.mark.parametrize("what", ["cnn", "scaling", "plan", "trace"])
def test_json_in_a_place_that_cannot_be_written_is_refused_at_start(tmp_path, what):
    assert_refused(run_bench(what, "--json", "/proc/x.json", cwd=tmp_path), "--json", "/proc")
    assert os.listdir(tmp_path) == []


def test_json_that_is_a_folder_is_refused_at_start(tmp_path):
    (tmp_path / "b").mkdir()
    assert_refused(run_bench("cnn", "--json", "b", cwd=tmp_path), "--json 'b' is a directory", "b/bench.json")
    assert os.listdir(tmp_path / "b") == []
    assert_refused(run_bench("cnn", "--json", "", cwd=tmp_path), "--json is empty")


def test_default_results_folder_is_checked_too(tmp_path):
    (tmp_path / "bench-results").write_text("a file, not a folder")
    assert_refused(run_bench("cnn", cwd=tmp_path), "bench-results/cnn.json", "not a directory")
    (tmp_path / "bench-results").unlink()
    (tmp_path / "bench-results" / "machine.json").mkdir(parents=True)
    assert_refused(run_bench("plan", cwd=tmp_path), "bench-results/machine.json", "--machine")


def test_calibrate_output_is_checked_at_start(tmp_path):
    (tmp_path / "m").mkdir()
    assert_refused(run_bench("calibrate", "-o", "m", cwd=tmp_path), "-o/--output 'm' is a directory")
    assert_refused(run_bench("calibrate", "-o", "/proc/m.json", cwd=tmp_path), "/proc")


def test_results_are_written_atomically(tmp_path):
    """write_json makes missing folders and leaves no temporary file; a failed write
    leaves the previous file."""
    import json

    from mpicnn.bench.report import write_json
    path = tmp_path / "new" / "r.json"
    write_json(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(path.parent) == ["r.json"]
    with pytest.raises(TypeError):
        write_json(str(path), {"a": object()})  # not JSON: fails halfway through
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(path.parent) == ["r.json"]


def test_a_combination_only_the_trainer_refuses_is_its_one_line(tmp_path):
    """A grid too fine for the images passes the bench's own checks; the trainer run it
    starts refuses it, and that line is the bench's error (was a RuntimeError traceback
    wrapping it)."""
    result = run_bench("spatial", "--sizes", "16", "--grids", "8x1", "--spatial-steps", "2", "--spatial-repeats", "1",
                       "--json", str(tmp_path / "s.json"), cwd=tmp_path)
    assert_refused(result, "spatial=8x1", "cannot be cut into 8 non-empty blocks", "(in a run the bench started)")
    assert os.listdir(tmp_path) == []


def test_the_kernel_bench_on_cupy_without_a_gpu_is_one_line(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "mpicnn.bench.kernels", "--backend", "cupy", "--json",
                             str(tmp_path / "k.json")], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=60)
    assert_refused(result, "--backend cupy", "--backend numpy|emu")
    assert os.listdir(tmp_path) == []
