"""``python -m mpicnn.bench augment`` runs end to end (it launches mpiexec itself) and
reports, per model and seed, the test accuracy without and with augmentation."""
import os
import subprocess
import sys

import pytest

from mpicnn.bench.augment import bench_augment


def test_augment_bench_reports_both_accuracies_per_seed():
    if os.environ.get("MPICNN_INNER_MPI_RUN"):
        pytest.skip("launches its own mpiexec")
    rows, summary = bench_augment(models=("lenet5",), seeds=(0, 1), epochs={"lenet5": 1})
    assert [(r["model"], r["seed"], r["epochs"]) for r in rows] == [("lenet5", 0, 1), ("lenet5", 1, 1)]
    for r in rows:
        assert 0.5 < r["accuracy"] <= 1 and 0.5 < r["accuracy_augmented"] <= 1
        assert r["test_loss"] != r["test_loss_augmented"]  # the augmented run trained on other images
    assert rows[0]["test_loss"] != rows[1]["test_loss"]  # the seed changes the run
    (s,) = summary
    assert s["wins"] + s["ties"] + s["losses"] == 2
    assert s["mean_accuracy"] == pytest.approx((rows[0]["accuracy"] + rows[1]["accuracy"]) / 2)


def test_augment_bench_refuses_a_model_outside_its_protocol():
    proc = subprocess.run([sys.executable, "-m", "mpicnn.bench", "augment", "--models", "resnet8"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "mpicnn: error: --models: the augment bench runs lenet5, convnet"
