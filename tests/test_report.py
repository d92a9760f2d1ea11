"""python -m mpicnn.report on a real traced run: the JSON analyses, the merged trace,
the plots, and report.html as headless Chromium renders it."""
import importlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from launch import ROOT, mpi_env, run_mpi

CI = os.environ.get("CI") == "true"


def require(module):
    """Import ``module``; without it skip, except under CI=true, where it fails."""
    return importlib.import_module(module) if CI else pytest.importorskip(module)


def require_program(*names):
    """The path of the first of ``names`` on PATH; skip (fail under CI=true) if none."""
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    if found is None:
        message = f"{' or '.join(names)} not installed (apt-get install {names[0]})"
        pytest.fail(message) if CI else pytest.skip(message)
    return found


def report(*args):
    return subprocess.run([sys.executable, "-m", "mpicnn.report", *args], capture_output=True, text=True,
                          timeout=300, env=mpi_env(), cwd=ROOT)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 2-rank run with a straggler, traced, with metrics every 2 steps."""
    require("matplotlib")
    path = tmp_path_factory.mktemp("run")
    proc = run_mpi(2, "-m", "mpicnn.train", "--no-progress", "--steps", "24", "--log-every", "2",
                   "--eval-every", "12", "--trace", str(path / "trace"), "--metrics", str(path / "trace" / "m.jsonl"),
                   env=mpi_env(MPICNN_SLOW_RANK="1:2.0"))
    assert proc.returncode == 0, proc.stderr
    return path / "trace"


@pytest.fixture(scope="module")
def analysis(run_dir):
    proc = report(str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_analyses(analysis):
    assert {"ranks", "breakdown", "straggler", "allreduce_hidden_fraction", "pipeline_bubble"} <= set(analysis)
    assert analysis["ranks"] == 2 and analysis["pipeline_bubble"] is None  # no pipeline in this run
    for rank in ("0", "1"):
        row = analysis["breakdown"][rank]
        assert {"compute", "communication", "waiting", "data", "idle"} <= set(row) and row["steps"] == 10
    assert analysis["straggler"]["rank"] == 1
    # Rank 0 waits for the straggler at the gradient allreduce; the straggler hardly waits.
    assert analysis["breakdown"]["0"]["waiting"] > 2 * analysis["breakdown"]["1"]["waiting"]
    assert analysis["breakdown"]["0"]["evaluation"] > 0  # the evaluation after step 12 is in the window


def test_merged_trace_has_a_pid_per_rank(run_dir, analysis):
    merged = json.loads(open(analysis["merged_trace"]).read())
    spans = [e for e in merged["traceEvents"] if e["ph"] == "X"]
    per_rank = [sum(e["ph"] == "X" for e in json.load(open(run_dir / f"rank{r}.trace.json"))["traceEvents"])
                for r in range(2)]
    assert sorted({e["pid"] for e in spans}) == [0, 1] and len(spans) == sum(per_rank)
    assert [info["rank"] for info in merged["distributedInfo"]] == [0, 1]


def test_plots_and_page(run_dir, analysis):
    assert set(analysis["plots"]) == {"training", "breakdown", "timeline", "bytes"}
    page = open(analysis["html"]).read()
    for name, path in analysis["plots"].items():
        assert os.path.getsize(path) > 5000, name
        assert f'<img alt="{name}" src="data:image/png;base64,' in page
    assert "Straggler" in page and "Seconds per step" in page


def test_report_page_in_headless_chromium(analysis, tmp_path):
    chromium = require_program("chromium", "chromium-browser")
    image = require("matplotlib.image")
    shot = tmp_path / "page.png"
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1000,2600", f"--screenshot={shot}", f"file://{analysis['html']}"],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr
    pixels = image.imread(str(shot))[..., :3]
    assert pixels.std() > 0.05  # not a blank page
    # The plots' own colours show: the images rendered (a missing image draws none of them).
    compute = np.abs(pixels - np.array([0x4c, 0x72, 0xb0]) / 255).sum(-1) < 0.05
    wait = np.abs(pixels - np.array([0xc4, 0x4e, 0x52]) / 255).sum(-1) < 0.05
    assert compute.sum() > 2000 and wait.sum() > 500


def test_report_errors_are_one_line(tmp_path):
    proc = report(str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("mpicnn: error: no rank*.trace.json") and len(proc.stderr.splitlines()) == 1
    proc = report(str(tmp_path / "missing"))
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_metrics_file_alone(run_dir, tmp_path):
    proc = report(str(run_dir / "m.jsonl"), "--json", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    a = json.loads(proc.stdout)
    assert a["ranks"] == 0 and not a["breakdown"] and list(a["plots"]) == ["training"]
    assert os.path.getsize(tmp_path / "training.png") > 5000 and (tmp_path / "report.html").exists()
