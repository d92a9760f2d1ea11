"""Whole models on the kernel backends (emulator; GPU where visible) against NumPy.

The correctness contract (DESIGN.md): with the same seed and batches, any backend
gives the parameters of the NumPy run up to float rounding (relative 1e-4 in
float32, 1e-9 in float64). These tests train a few steps through the real layers,
losses and optimizers on each backend and compare every parameter.
"""

import numpy as np
import pytest

from mpicnn import backend, data, models, nn
from mpicnn.nn import init
from mpicnn.nn.module import Context
from mpicnn.nn.optim import SGD, Adam


from kernel_backends import KERNEL_BACKENDS


def train(name, build, batches, steps, optimizer):
    """Train ``build()`` for ``steps`` on backend ``name``; returns (host params, losses)."""
    with backend.using(name):
        init.manual_seed(0)
        model = build()
        ctx = Context()
        model.set_context(ctx)
        backend.to_backend(model)
        opt = optimizer(model.named_parameters())
        crit = nn.CrossEntropyLoss()
        losses = []
        model.train()
        for step in range(steps):
            x, y = batches[step % len(batches)]
            ctx.step, ctx.sample_offset = step, 0
            logits = model.forward(backend.asarray(x))
            losses.append(crit(logits, y))
            model.backward(crit.backward())
            opt.step()
            opt.zero_grad()
        params = {n: backend.to_host(p.data).copy() for n, p in model.named_parameters()}
        buffers = {n: backend.to_host(b).copy() for n, b in model.named_buffers()}
        model.eval()
        evals = backend.to_host(model.forward(backend.asarray(batches[0][0])))
    return params, buffers, losses, evals


def compare(ref, got, rtol):
    (p0, b0, l0, e0), (p1, b1, l1, e1) = ref, got
    np.testing.assert_allclose(l1, l0, rtol=rtol)
    for n in p0:
        scale = np.abs(p0[n]).max()
        np.testing.assert_allclose(p1[n], p0[n], rtol=rtol, atol=rtol * scale, err_msg=n)
    for n in b0:
        np.testing.assert_allclose(b1[n], b0[n], rtol=rtol, atol=rtol, err_msg=n)
    np.testing.assert_allclose(e1, e0, rtol=rtol, atol=rtol * np.abs(e0).max())


def mnist_batches(B, count, dtype):
    ds = data.open_dataset("mnist5k", "train")
    try:
        order = data.epoch_order(ds.num_samples, 0, 0)
        return [ds.read(data.batch_indices(order, k, B), dtype=dtype) for k in range(count)]
    finally:
        ds.close()


def synthetic_batches(shape, classes, B, count, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((B,) + shape).astype(dtype), rng.integers(0, classes, B))
            for _ in range(count)]


@pytest.mark.parametrize("name", KERNEL_BACKENDS)
def test_lenet5_mnist5k_three_steps_float32(name):
    batches = mnist_batches(64, 3, np.float32)
    build = lambda: models.get("lenet5", 1, 10, dtype=np.float32, image_size=(28, 28))  # noqa: E731
    adam = lambda params: Adam(params, lr=1e-3)  # noqa: E731
    ref = train("numpy", build, batches, 3, adam)
    compare(ref, train(name, build, batches, 3, adam), rtol=1e-4)


def every_layer_model(dtype, global_pool):
    """Every layer kind, NHWC and NCHW ones, with BatchNorm and Dropout in training."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, dtype=dtype), nn.BatchNorm2d(6, dtype=dtype), nn.LeakyReLU(0.1),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Residual(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=2, bias=False, dtype=dtype),
                                  nn.BatchNorm2d(6, dtype=dtype), nn.ReLU()),
                    nn.Sequential(nn.Conv2d(6, 6, 1, dtype=dtype))),
        nn.Dropout(0.25), nn.AvgPool2d(2, stride=1, padding=1),
        nn.Conv2d(6, 8, 3, stride=2, dilation=1, dtype=dtype), nn.ReLU(),
        global_pool, nn.Linear(8, 5, dtype=dtype))


@pytest.mark.parametrize("name", KERNEL_BACKENDS)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_every_layer_float64(name, opt):
    batches = synthetic_batches((3, 11, 9), 5, 6, 2, np.float64)
    if opt == "sgd":
        pool = nn.GlobalMaxPool2d
        make = lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)  # noqa: E731
    else:
        pool = lambda: nn.GlobalRMSPool2d(eps=1e-6)  # noqa: E731
        make = lambda p: Adam(p, lr=1e-3, weight_decay=1e-3)  # noqa: E731
    build = lambda: every_layer_model(np.float64, pool())  # noqa: E731
    ref = train("numpy", build, batches, 3, make)
    compare(ref, train(name, build, batches, 3, make), rtol=1e-9)


@pytest.mark.parametrize("name", KERNEL_BACKENDS)
def test_resnet8_global_pools_float64(name):
    batches = synthetic_batches((3, 8, 8), 10, 4, 2, np.float64)
    build = lambda: models.get("resnet8", 3, 10, dtype=np.float64, width=4)  # noqa: E731
    make = lambda p: SGD(p, lr=0.1, momentum=0.9)  # noqa: E731
    ref = train("numpy", build, batches, 2, make)
    compare(ref, train(name, build, batches, 2, make), rtol=1e-9)


def test_trainer_cli_emu_equals_numpy(tmp_path):
    from mpi4py import MPI

    from mpicnn.train import run

    def params(backend_name):
        args = ["--model", "lenet5", "--dataset", "mnist5k", "--steps", "3", "--batch-size", "64",
                "--dtype", "float32", "--backend", backend_name, "--no-progress",
                "--metrics", str(tmp_path / f"{backend_name}.jsonl")]
        try:
            result = run(args, MPI.COMM_SELF)
        finally:
            backend.use("numpy")
        return {n: backend.to_host(p.data) for n, p in result.model.named_parameters()}

    ref, got = params("numpy"), params("emu")
    for n in ref:
        np.testing.assert_allclose(got[n], ref[n], rtol=1e-4, atol=1e-4 * np.abs(ref[n]).max(), err_msg=n)
