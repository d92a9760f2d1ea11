"""--tensorboard DIR: a real TensorBoard server, started on loopback, returns the run's
scalars over its HTTP data API."""
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from launch import mpi_env, run_mpi
from test_report import require


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, **query):
    url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def server(tmp_path):
    """(log directory, port, the run's metrics records) of a 2-rank run served by TensorBoard."""
    require("tensorboardX")
    require("tensorboard")
    logdir, metrics = tmp_path / "tb", tmp_path / "m.jsonl"
    proc = run_mpi(2, "-m", "mpicnn.train", "--no-progress", "--steps", "20", "--log-every", "5", "--eval-every",
                   "15", "--tensorboard", str(logdir), "--metrics", str(metrics))
    assert proc.returncode == 0, proc.stderr
    port = free_port()
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                           "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=mpi_env())
    try:
        yield logdir, port, [json.loads(line) for line in metrics.read_text().splitlines()]
    finally:
        tb.terminate()
        tb.wait(timeout=30)


def scalars(port, tag, deadline=90):
    """[(step, value)] of ``tag`` once TensorBoard has loaded it."""
    end = time.time() + deadline
    while True:
        try:
            tags = get(port, "/data/plugin/scalars/tags")
            if tags and tag in next(iter(tags.values())):
                run = next(iter(tags))
                return [(s, v) for _, s, v in get(port, "/data/plugin/scalars/scalars", run=run, tag=tag)]
        except OSError:
            pass  # not listening yet
        if time.time() > end:
            raise AssertionError(f"TensorBoard did not serve {tag} within {deadline} s")
        time.sleep(0.5)


def test_tensorboard_serves_the_runs_scalars(server):
    logdir, port, records = server
    train = [r for r in records if "loss" in r and not r.get("final")]
    loss = scalars(port, "train/loss")
    assert [s for s, _ in loss] == [r["step"] for r in train] == [5, 10, 15, 20]
    assert [v for _, v in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    for tag, key in (("train/accuracy", "accuracy"), ("train/lr", "lr"), ("train/images_per_sec", "images_per_sec")):
        assert [v for _, v in scalars(port, tag)] == pytest.approx([r[key] for r in train], rel=1e-6)
    # The evaluation at step 15 is a record; the final one, at 20, only in the summary.
    tests = [r for r in records if r.get("test_accuracy") is not None]
    assert [(r["step"], bool(r.get("final"))) for r in tests] == [(15, False), (20, True)]
    assert [(s, pytest.approx(v)) for s, v in scalars(port, "test/accuracy")] == \
        [(r["step"], r["test_accuracy"]) for r in tests]
    forward = scalars(port, "phase/forward_seconds")
    assert [s for s, _ in forward] == [5, 10, 15, 20] and all(0 < v < 5 for _, v in forward)
    assert scalars(port, "phase/exchange_seconds")
