"""``bench zoo``: the flop count it divides by, its rows, and that its PyTorch mirror
computes what our model computes (same loss on the first step, from the same weights)."""
import numpy as np
import pytest

from mpicnn.bench import zoo
from mpicnn.nn import Conv2d, GlobalAvgPool2d, Linear, ReLU, Sequential


def test_step_gflop_counts_forward_and_both_gradients_but_the_first_input_gradient():
    model = Sequential(Conv2d(3, 8, 3, padding=1), ReLU(), Conv2d(8, 4, 3, stride=2, padding=1),
                       GlobalAvgPool2d(), Linear(4, 10))
    conv1 = 2.0 * 2 * 16 * 16 * 8 * 3 * 9
    conv2 = 2.0 * 2 * 8 * 8 * 4 * 8 * 9
    linear = 2.0 * 2 * 4 * 10
    want = 2 * conv1 + 3 * conv2 + 3 * linear
    assert zoo.step_gflop(model, 2, (3, 16, 16)) == pytest.approx(want / 1e9)


def test_zoo_rows_without_and_with_torch():
    rows, note = zoo.bench_zoo({"lenet5"}, repeats=1, warmup=0)
    assert [(r["model"], r["batch"]) for r in rows] == [("lenet5", 64), ("lenet5", 128)]
    assert note is None and all(r["ours_ms"] > 0 and 0 < r["peak"] < 1 for r in rows)
    torch = pytest.importorskip("torch")
    rows, note = zoo.bench_zoo({"lenet5", "resnet8"}, repeats=1, warmup=0, compare_torch=True)
    assert note == f"PyTorch {torch.__version__}"
    assert [r["model"] for r in rows] == ["lenet5", "lenet5", "resnet8"]  # pools, Flatten, Residual
    for row in rows:
        assert row["torch_ms"] > 0 and row["ratio"] == row["ours_ms"] / row["torch_ms"]
        np.testing.assert_allclose(row["loss"], row["torch_loss"], rtol=1e-5)
