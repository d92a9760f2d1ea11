"""Layers: finite-difference gradients, PyTorch agreement, partition contexts, state."""
import subprocess
import sys
import threading

import numpy as np
import pytest

from mpicnn import nn
from mpicnn.nn import init
from mpicnn.nn.module import Context

from gradcheck import numeric_grad
from tools import TORCH_INSTALL, require_module

rng = np.random.default_rng(99)


def check_grads(layer, x, rtol=1e-6, atol=1e-8):
    """Backward of sum(layer(x) * r) against central differences, for x and every parameter."""
    y = layer.forward(x)
    r = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(r)

    def loss():
        return float(np.sum(layer.forward(x) * r))

    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=rtol, atol=atol)
    for name, p in layer.named_parameters():
        grad = p.grad.copy()
        np.testing.assert_allclose(grad, numeric_grad(loss, p.data), rtol=rtol, atol=atol,
                                   err_msg=name)
    return dx


def away_from_zero(shape, gap=1e-2):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < gap, np.where(x < 0, -gap, gap), x)


# ---------------------------------------------------------------------------- gradients

CONV_LAYERS = [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=(1, 0), groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, dilation=2, groups=4, bias=False),
    dict(in_channels=2, out_channels=3, kernel_size=1, stride=(1, 2), padding=1),
]


@pytest.mark.parametrize("kwargs", CONV_LAYERS)
def test_conv2d_gradients(kwargs):
    layer = nn.Conv2d(**kwargs, dtype=np.float64)
    x = rng.standard_normal((2, kwargs["in_channels"], 7, 6))
    check_grads(layer, x)
    assert (layer.bias is None) == (kwargs.get("bias") is False)


def test_linear_gradients_2d_and_4d():
    layer = nn.Linear(5, 3, dtype=np.float64)
    check_grads(layer, rng.standard_normal((4, 5)))
    check_grads(layer, rng.standard_normal((2, 3, 4, 5)))  # acts on the last (W) axis


def test_activation_and_pool_gradients():
    x = away_from_zero((2, 3, 6, 5))
    check_grads(nn.ReLU(), x)
    check_grads(nn.LeakyReLU(0.1), x)
    check_grads(nn.ReLU(), away_from_zero((4, 7)))
    for layer in [nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2),
                  nn.AvgPool2d((3, 2), (2, 1), (1, 1)), nn.GlobalAvgPool2d(),
                  nn.GlobalMaxPool2d(), nn.GlobalRMSPool2d(), nn.GlobalRMSPool2d(eps=0.1)]:
        check_grads(layer, rng.standard_normal((2, 3, 6, 5)))


def test_batchnorm_gradients_train_and_eval():
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    bn.weight.data[...] = rng.standard_normal(3)
    bn.bias.data[...] = rng.standard_normal(3)
    x = rng.standard_normal((3, 3, 4, 5)) * 2 + 0.5
    check_grads(bn, x, rtol=1e-5, atol=1e-7)
    bn.running_var[...] = rng.random(3) + 0.5
    bn.eval()
    check_grads(bn, x, rtol=1e-5, atol=1e-7)
    bn = nn.BatchNorm2d(3, affine=False, track_running_stats=False, dtype=np.float64)
    assert bn.parameters() == [] and dict(bn.named_buffers()) == {}
    check_grads(bn.eval(), x, rtol=1e-5, atol=1e-7)  # no running stats: batch stats in eval


def test_dropout_and_flatten_gradients():
    layer = nn.Dropout(0.4)
    check_grads(layer, rng.standard_normal((3, 2, 4, 5)))  # same mask on every call
    check_grads(layer, rng.standard_normal((3, 7)))
    check_grads(nn.Flatten(), rng.standard_normal((2, 3, 4, 5)))


def test_sequential_and_residual_gradients():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=np.float64), nn.BatchNorm2d(4, dtype=np.float64),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, dtype=np.float64), nn.LeakyReLU())),
        nn.Residual(nn.Conv2d(4, 6, 1, stride=2, dtype=np.float64),
                    shortcut=nn.Conv2d(4, 6, 1, stride=2, bias=False, dtype=np.float64)),
        nn.MaxPool2d(2), nn.Dropout(0.3), nn.Flatten(), nn.Linear(6, 3, dtype=np.float64))
    check_grads(model, away_from_zero((2, 2, 4, 4)), rtol=1e-5, atol=1e-7)


def test_swap_relu_maxpool_keeps_values_and_gradients():
    def make():
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, dtype=np.float64), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Residual(nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, 1, 1))),
                             nn.ReLU(), nn.GlobalAvgPool2d(), nn.Linear(4, 3, dtype=np.float64))
    init.manual_seed(3)
    a = make()
    init.manual_seed(3)
    b = make()
    assert nn.swap_relu_maxpool(b) == 2
    assert [type(m).__name__ for m in b][:3] == ["Conv2d", "MaxPool2d", "ReLU"]
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    x = rng.standard_normal((3, 2, 6, 6)) - 0.5
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    dy = rng.standard_normal((3, 3))
    np.testing.assert_array_equal(a.backward(dy), b.backward(dy))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=n)


# ---------------------------------------------------------------------------- vs PyTorch

def _t(a, torch):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("kwargs", CONV_LAYERS)
def test_conv2d_matches_torch(kwargs):
    torch = require_module("torch", TORCH_INSTALL)
    layer = nn.Conv2d(**kwargs, dtype=np.float64)
    tl = torch.nn.Conv2d(**kwargs).double()
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(layer.weight.data))
        if layer.bias is not None:
            tl.bias.copy_(torch.from_numpy(layer.bias.data))
    x = rng.standard_normal((3, kwargs["in_channels"], 9, 8))
    xt = _t(x, torch)
    yt = tl(xt)
    y = layer.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-11, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(dy))
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, tl.weight.grad.numpy(), rtol=1e-11, atol=1e-11)
    if layer.bias is not None:
        np.testing.assert_allclose(layer.bias.grad, tl.bias.grad.numpy(), rtol=1e-11, atol=1e-11)


def test_linear_matches_torch():
    torch = require_module("torch", TORCH_INSTALL)
    layer = nn.Linear(6, 4, dtype=np.float64)
    tl = torch.nn.Linear(6, 4).double()
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(layer.weight.data))
        tl.bias.copy_(torch.from_numpy(layer.bias.data))
    x = rng.standard_normal((5, 6))
    xt = _t(x, torch)
    yt = tl(xt)
    dy = rng.standard_normal((5, 4))
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(layer.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.weight.grad, tl.weight.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.bias.grad, tl.bias.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_batchnorm_matches_torch():
    torch = require_module("torch", TORCH_INSTALL)
    bn = nn.BatchNorm2d(4, momentum=0.2, dtype=np.float64)
    tb = torch.nn.BatchNorm2d(4, momentum=0.2).double()
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    bn.weight.data[...] = w
    bn.bias.data[...] = b
    with torch.no_grad():
        tb.weight.copy_(torch.from_numpy(w))
        tb.bias.copy_(torch.from_numpy(b))
    for _ in range(2):  # two steps: running statistics accumulate
        x = rng.standard_normal((5, 4, 3, 6)) * 3 + 2
        xt = _t(x, torch)
        yt = tb(xt)
        dy = rng.standard_normal(x.shape)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(bn.forward(x), yt.detach().numpy(), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(bn.backward(dy), xt.grad.numpy(), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(bn.weight.grad, tb.weight.grad.numpy(), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(bn.bias.grad, tb.bias.grad.numpy(), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(bn.running_mean, tb.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), rtol=1e-12)
    assert int(bn.num_batches_tracked) == int(tb.num_batches_tracked) == 2
    bn.eval()
    tb.eval()
    x = rng.standard_normal((2, 4, 3, 3))
    xt = _t(x, torch)
    yt = tb(xt)
    dy = rng.standard_normal(x.shape)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(bn.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.backward(dy), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ours, theirs", [
    (lambda: nn.MaxPool2d(2), lambda t: t.nn.MaxPool2d(2)),
    (lambda: nn.MaxPool2d(3, 2, 1), lambda t: t.nn.MaxPool2d(3, 2, 1)),
    (lambda: nn.MaxPool2d((2, 3), (1, 2), (1, 1)), lambda t: t.nn.MaxPool2d((2, 3), (1, 2), (1, 1))),
    (lambda: nn.AvgPool2d(2), lambda t: t.nn.AvgPool2d(2)),
    (lambda: nn.AvgPool2d(3, 2, 1), lambda t: t.nn.AvgPool2d(3, 2, 1)),
    (lambda: nn.GlobalAvgPool2d(), lambda t: t.nn.Sequential(t.nn.AdaptiveAvgPool2d(1), t.nn.Flatten())),
    (lambda: nn.GlobalMaxPool2d(), lambda t: t.nn.Sequential(t.nn.AdaptiveMaxPool2d(1), t.nn.Flatten())),
    (lambda: nn.Flatten(), lambda t: t.nn.Flatten()),
])
def test_pools_match_torch(ours, theirs):
    torch = require_module("torch", TORCH_INSTALL)
    layer, tl = ours(), theirs(torch)
    x = rng.standard_normal((3, 4, 9, 7))  # continuous values: no ties
    xt = _t(x, torch)
    yt = tl(xt)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(layer.forward(x), yt.detach().numpy(), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-13, atol=1e-14)


def test_max_pool_ties_match_torch():
    torch = require_module("torch", TORCH_INSTALL)
    x = np.maximum(rng.standard_normal((2, 3, 8, 8)), 0)  # ReLU output: ties at 0
    xt = _t(x, torch)
    yt = torch.nn.functional.max_pool2d(xt, 2)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(dy))
    layer = nn.MaxPool2d(2)
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(dy), xt.grad.numpy())


def test_cross_entropy_and_init_match_torch():
    torch = require_module("torch", TORCH_INSTALL)
    logits = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    crit = nn.CrossEntropyLoss()
    lt = _t(logits, torch)
    loss_t = torch.nn.functional.cross_entropy(lt, torch.from_numpy(labels))
    loss_t.backward()
    assert abs(crit(logits, labels) - float(loss_t.detach())) < 1e-13
    np.testing.assert_allclose(crit.backward(), lt.grad.numpy(), rtol=1e-12, atol=1e-14)
    assert crit.correct == int(np.sum(np.argmax(logits, 1) == labels))
    # init bounds as PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    conv = nn.Conv2d(8, 16, 3, groups=2)
    bound = 1 / np.sqrt(4 * 9)
    for p in (conv.weight.data, conv.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    assert abs(conv.weight.data.std() - bound / np.sqrt(3)) < 0.1 * bound


def test_benchmark_model_matches_torch():
    torch = require_module("torch", TORCH_INSTALL)
    from mpicnn.bench.cnn import _torch_model, build_benchmark_cnn
    model = build_benchmark_cnn(np.float32, seed=3)
    tm = _torch_model(model, torch)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 4)
    crit = nn.CrossEntropyLoss()
    loss = crit(model.forward(x), labels)
    assert model.backward(crit.backward()) is None  # first layer skips dx
    tl = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(labels))
    tl.backward()
    assert abs(loss - float(tl.detach())) < 1e-5
    theirs = dict(tm.named_parameters())
    for name, p in model.named_parameters():
        t = theirs[name.replace("7.", "8.") if name.startswith("7.") else name]
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-3, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------- dtypes

def test_float32_end_to_end():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Residual(nn.Conv2d(4, 4, 3, padding=1)), nn.LeakyReLU(), nn.AvgPool2d(2),
        nn.Dropout(0.2), nn.Conv2d(4, 5, 1), nn.GlobalRMSPool2d(), nn.Linear(5, 3))
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = model.forward(x)
    crit = nn.CrossEntropyLoss()
    loss = crit(y, np.array([0, 1, 2, 0]))
    assert isinstance(loss, float)
    dlogits = crit.backward()
    dx = model.backward(dlogits)
    assert y.dtype == dlogits.dtype == dx.dtype == np.float32
    for name, p in model.named_parameters():
        assert p.data.dtype == p.grad.dtype == np.float32, name
    for name, b in model.named_buffers():
        assert b.dtype in (np.float32, np.int64), name
    for layer in (nn.GlobalAvgPool2d(), nn.GlobalMaxPool2d(), nn.Flatten()):
        out = layer.forward(x)
        assert out.dtype == np.float32 and layer.backward(out).dtype == np.float32
    with pytest.raises(TypeError, match="float64"):
        nn.Conv2d(3, 4, 3).forward(x.astype(np.float64))


# ---------------------------------------------------------------------------- partitions

class OffsetContext(Context):
    def __init__(self, sample_offset, step=0):
        self.sample_offset = sample_offset
        self.step = step


def test_dropout_mask_independent_of_batch_split_and_layout():
    layer = nn.Dropout(0.5)
    x = rng.standard_normal((6, 3, 4, 5))
    layer.set_context(OffsetContext(0, step=7))
    whole = layer.forward(x)
    layer.set_context(OffsetContext(0, step=7))
    first = layer.forward(x[:2])
    layer.set_context(OffsetContext(2, step=7))
    second = layer.forward(x[2:])
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)
    # the private NHWC path gives the same mask
    layer.set_context(OffsetContext(0, step=7))
    private = layer._forward(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(private.transpose(0, 3, 1, 2), whole)
    # another step, another mask; eval: identity
    layer.set_context(OffsetContext(0, step=8))
    assert not np.array_equal(layer.forward(x), whole)
    layer.eval()
    assert layer.forward(x) is x and layer.backward(x) is x
    # two layers draw different seeds from the init RNG
    init.manual_seed(5)
    a, b = nn.Dropout(), nn.Dropout()
    init.manual_seed(5)
    assert nn.Dropout().seed == a.seed != b.seed


class PairContext(Context):
    """Two simulated ranks (threads): allreduce_stats sums the arrays of both."""

    def __init__(self, barrier, slots, rank):
        self.barrier, self.slots, self.rank = barrier, slots, rank

    def allreduce_stats(self, array):
        self.slots[self.rank] = array.copy()
        self.barrier.wait()
        total = self.slots[0] + self.slots[1]
        self.barrier.wait()
        array[...] = total
        return array


def test_batchnorm_statistics_reduced_over_ranks_equal_full_batch():
    C = 3
    x = rng.standard_normal((7, C, 4, 5)) * 2 + 1  # 7 samples: ranks hold 4 and 3
    dy = rng.standard_normal(x.shape)
    full = nn.BatchNorm2d(C, dtype=np.float64)
    full.weight.data[...] = rng.standard_normal(C)
    y_full = full.forward(x)
    dx_full = full.backward(dy)

    barrier, slots = threading.Barrier(2, timeout=10), [None, None]
    parts = [(slice(0, 4), 0), (slice(4, 7), 1)]
    layers = []
    for _, rank in parts:
        bn = nn.BatchNorm2d(C, dtype=np.float64)
        bn.weight.data[...] = full.weight.data
        bn.set_context(PairContext(barrier, slots, rank))
        layers.append(bn)
    out = [None, None]

    def run(rank, sl):
        y = layers[rank].forward(x[sl])
        out[rank] = (y, layers[rank].backward(dy[sl]))

    threads = [threading.Thread(target=run, args=(rank, sl)) for sl, rank in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.concatenate([out[0][0], out[1][0]]), y_full, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([out[0][1], out[1][1]]), dx_full, rtol=1e-11, atol=1e-12)
    for bn in layers:  # every rank tracks the global statistics
        np.testing.assert_allclose(bn.running_mean, full.running_mean, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, full.running_var, rtol=1e-12)
    # parameter gradients are local sums: they add up to the full-batch gradient
    np.testing.assert_allclose(layers[0].weight.grad + layers[1].weight.grad, full.weight.grad, rtol=1e-11)
    np.testing.assert_allclose(layers[0].bias.grad + layers[1].bias.grad, full.bias.grad, rtol=1e-11)
    # and a rank alone (serial context) would NOT reproduce the full batch
    alone = nn.BatchNorm2d(C, dtype=np.float64)
    alone.weight.data[...] = full.weight.data
    assert not np.allclose(alone.forward(x[:4]), y_full[:4])


# ---------------------------------------------------------------------------- module protocol

def test_named_parameters_state_dict_and_modes():
    def make():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * 6 * 6, 2, bias=False))
    a, b = make(), make()
    assert [n for n, _ in a.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight"]
    state = a.state_dict()
    assert list(state)[5:] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    a.forward(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))  # moves running stats
    assert int(a[1].num_batches_tracked) == 1
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    for (n1, v1), (n2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert n1 == n2
        np.testing.assert_array_equal(v1, v2)
    assert int(b[1].num_batches_tracked) == 1 and b[1].num_batches_tracked.shape == ()
    a.eval()
    assert not any(m.training for m in a.modules())
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), b.eval().forward(x))
    a.train()
    assert all(m.training for m in a.modules())
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict({**a.state_dict(), "0.bias": np.zeros(5, np.float32)})


def test_init_is_reproducible():
    init.manual_seed(11)
    a = nn.Conv2d(3, 4, 3)
    init.manual_seed(11)
    b = nn.Conv2d(3, 4, 3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    c = nn.Linear(3, 4, rng=np.random.default_rng(1))
    d = nn.Linear(3, 4, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(c.weight.data, d.weight.data)
    assert nn.Linear(3, 4, dtype=np.float64).weight.data.dtype == np.float64


def test_needs_input_grad_skips_dx_but_not_parameter_grads():
    layer = nn.Conv2d(3, 2, 3, padding=1, dtype=np.float64)
    x = rng.standard_normal((2, 3, 5, 5))
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    w_grad = layer.weight.grad.copy()
    layer.zero_grad()
    layer.needs_input_grad = False
    layer.forward(x)
    assert layer.backward(np.ones_like(y)) is None
    np.testing.assert_allclose(layer.weight.grad, w_grad, rtol=1e-13)
    assert dx.shape == x.shape
    lin = nn.Linear(3, 2)
    lin.needs_input_grad = False
    lin.forward(np.ones((2, 3), np.float32))
    assert lin.backward(np.ones((2, 2), np.float32)) is None and np.all(lin.bias.grad == 2)


def test_backward_accumulates():
    layer = nn.Linear(3, 2, dtype=np.float64)
    x = rng.standard_normal((4, 3))
    layer.forward(x)
    layer.backward(np.ones((4, 2)))
    once = layer.weight.grad.copy()
    layer.backward(np.ones((4, 2)))
    np.testing.assert_allclose(layer.weight.grad, 2 * once)


def test_errors_quote_bad_values():
    with pytest.raises(ValueError, match="expected 3 input channels, got 5"):
        nn.Conv2d(3, 4, 3).forward(np.zeros((1, 5, 8, 8), np.float32))
    with pytest.raises(ValueError, match="groups=3"):
        nn.Conv2d(4, 4, 3, groups=3)
    with pytest.raises(TypeError, match="'3'"):
        nn.Conv2d(3, 4, "3")
    with pytest.raises(ValueError, match="-1"):
        nn.Linear(-1, 3)
    with pytest.raises(ValueError, match="1.5"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="expected 4 channels, got 2"):
        nn.BatchNorm2d(4).forward(np.zeros((2, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="last axis 3"):
        nn.Linear(3, 2).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        nn.MaxPool2d(2).forward(np.zeros((2, 3), np.float32))
    for layer in (nn.Conv2d(1, 1, 1), nn.Linear(1, 1), nn.ReLU(), nn.LeakyReLU(), nn.MaxPool2d(2),
                  nn.AvgPool2d(2), nn.GlobalAvgPool2d(), nn.GlobalMaxPool2d(), nn.GlobalRMSPool2d(),
                  nn.BatchNorm2d(1), nn.Dropout(), nn.Flatten(), nn.CrossEntropyLoss()):
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(np.zeros((1, 1, 2, 2), np.float32))


def test_package_never_imports_torch():
    code = ("import sys, mpicnn.nn, mpicnn.ops, mpicnn.bench.cnn; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_functions_run():
    from mpicnn.bench import cnn
    r = cnn.bench_cnn(batch=4, repeats=2, warmup=1)
    assert r["ours_ms"] > 0 and r["swapped_ms"] > 0 and len(r["ours_times_ms"]) == 2
    assert np.isfinite(r["loss"]) and "ratio" not in r
    rows = cnn.bench_conv_layers(shapes=[("tiny", 2, 3, 8, 4, 3, 1, 1)], repeats=1)
    assert rows[0]["name"] == "tiny" and rows[0]["fwd_gflops"] > 0 and rows[0]["dx_gflops"] > 0
    assert cnn.gemm_gflops(n=64, repeats=1) > 0


def test_wrapped_passes_run_around_one_instance_and_come_off_in_reverse():
    """Module.wrap_pass: what the trainer hooks layers with (gradient buckets, read-ahead,
    trace spans). It wraps the pass containers call on that instance only, and removing
    the wrappers in reverse order gives back the class's methods."""
    init.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    first, last = model[0], model[2]
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    y_plain = model.forward(x)
    dx_plain = model.backward(np.ones_like(y_plain))
    seen = []

    def note(tag):
        def around(inner, value):
            seen.append(("in", tag))
            out = inner(value)
            seen.append(("out", tag))
            return out
        return around

    handles = [first.wrap_pass("forward", note("f1")), first.wrap_pass("forward", note("f2")),
               last.wrap_pass("backward", note("b"))]
    model.zero_grad()
    y = model.forward(x)
    dx = model.backward(np.ones_like(y))
    np.testing.assert_array_equal(y, y_plain)
    np.testing.assert_array_equal(dx, dx_plain)
    # the later wrapper runs outside the earlier one; only the wrapped instances record
    assert seen == [("in", "f2"), ("in", "f1"), ("out", "f1"), ("out", "f2"), ("in", "b"), ("out", "b")]
    assert "_forward" not in vars(nn.Conv2d(1, 2, 3))
    for handle in reversed(handles):
        handle.remove()
    assert "_forward" not in vars(first) and "_backward" not in vars(last)
    seen.clear()
    model.backward(np.ones_like(model.forward(x)))
    assert seen == []
