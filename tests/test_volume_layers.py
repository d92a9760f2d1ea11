"""3-D and dense-prediction layers and losses against PyTorch (float64, 1e-10) and
central finite differences."""
import os

import numpy as np
import pytest

from mpicnn import nn

from gradcheck import numeric_grad

if os.environ.get("CI") == "true":  # CI installs torch: missing there is a failure
    import torch
else:
    torch = pytest.importorskip("torch")
F = torch.nn.functional

rng = np.random.default_rng(14)
TOL = dict(rtol=1e-10, atol=1e-10)


def t(a, grad=True):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def against_torch(layer, torch_layer, x, params=()):
    """Forward, input gradient and parameter gradients of ``layer`` equal torch's."""
    y = layer.forward(x)
    r = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(r)
    tx = t(x)
    ty = torch_layer(tx)
    (ty * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL)
    for ours, theirs in params:
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), **TOL)


def check_fd(layer, x):
    y = layer.forward(x)
    r = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(r)
    loss = lambda: float(np.sum(layer.forward(x) * r))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, numeric_grad(loss, p.data), rtol=1e-6, atol=1e-8,
                                   err_msg=name)


CONV3D = [
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2, 1), stride=(2, 1, 2), padding=(1, 0, 1), groups=2),
    dict(in_channels=2, out_channels=2, kernel_size=2, padding=2, dilation=2, groups=2, bias=False),
    dict(in_channels=3, out_channels=5, kernel_size=1, stride=2),
]


@pytest.mark.parametrize("kwargs", CONV3D)
def test_conv3d_matches_torch(kwargs):
    layer = nn.Conv3d(**kwargs, dtype=np.float64)
    tl = torch.nn.Conv3d(**kwargs, dtype=torch.float64)
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(layer.weight.data))
        if layer.bias is not None:
            tl.bias.copy_(torch.tensor(layer.bias.data))
    x = rng.standard_normal((2, kwargs["in_channels"], 7, 6, 5))
    params = [(layer.weight, tl.weight)] + ([(layer.bias, tl.bias)] if layer.bias is not None else [])
    against_torch(layer, tl, x, params)


def test_conv3d_finite_differences_and_init_bounds():
    layer = nn.Conv3d(2, 3, 3, stride=2, padding=1, dtype=np.float64)
    check_fd(layer, rng.standard_normal((1, 2, 4, 5, 3)))
    bound = 1 / np.sqrt(2 * 27)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.weight.data).max() > 0.5 * bound


@pytest.mark.parametrize("make, make_torch", [
    (lambda: nn.MaxPool3d(2), lambda: torch.nn.MaxPool3d(2)),
    (lambda: nn.MaxPool3d(3, 2, 1), lambda: torch.nn.MaxPool3d(3, 2, 1)),
    (lambda: nn.MaxPool3d((2, 3, 1), (1, 2, 1)), lambda: torch.nn.MaxPool3d((2, 3, 1), (1, 2, 1))),
    (lambda: nn.AvgPool3d(2), lambda: torch.nn.AvgPool3d(2)),
    (lambda: nn.AvgPool3d(3, 2, 1), lambda: torch.nn.AvgPool3d(3, 2, 1)),
    (lambda: nn.GlobalAvgPool3d(), lambda: (lambda v: v.mean(dim=(2, 3, 4)))),
    (lambda: nn.GlobalMaxPool3d(), lambda: (lambda v: v.amax(dim=(2, 3, 4)))),
    (lambda: nn.GlobalRMSPool3d(0.1), lambda: (lambda v: (v.pow(2).mean(dim=(2, 3, 4)) + 0.1).sqrt())),
])
def test_pools_3d_match_torch(make, make_torch):
    x = rng.standard_normal((2, 3, 6, 5, 4))
    against_torch(make(), make_torch(), x)
    check_fd(make(), x)


@pytest.mark.parametrize("shape, scale", [((2, 3, 4, 5), 2), ((2, 3, 4, 5), (1, 3)),
                                          ((1, 2, 3, 2, 4), 2), ((1, 2, 3, 2, 4), (2, 1, 3))])
def test_upsample_nearest_matches_torch(shape, scale):
    x = rng.standard_normal(shape)
    against_torch(nn.Upsample(scale_factor=scale), torch.nn.Upsample(scale_factor=scale, mode="nearest"), x)
    check_fd(nn.Upsample(scale), x)


def test_upsample_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="nearest"):
        nn.Upsample(2, mode="bilinear")
    with pytest.raises(ValueError, match="scale_factor"):
        nn.Upsample(1.5)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm3d_matches_torch(training):
    bn = nn.BatchNorm3d(3, dtype=np.float64)
    tb = torch.nn.BatchNorm3d(3, dtype=torch.float64)
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    bn.weight.data[...] = w
    bn.bias.data[...] = b
    with torch.no_grad():
        tb.weight.copy_(torch.tensor(w))
        tb.bias.copy_(torch.tensor(b))
    x = rng.standard_normal((3, 3, 4, 3, 2)) * 2 + 0.5
    if not training:  # eval normalises with running statistics gathered from one batch
        bn.forward(x)
        tb(t(x, False))
        bn.eval()
        tb.eval()
    against_torch(bn, tb, x, [(bn.weight, tb.weight), (bn.bias, tb.bias)])
    np.testing.assert_allclose(bn.running_mean, tb.running_mean.numpy(), **TOL)
    np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), **TOL)


def test_concat_skip_unet_level_matches_torch_and_fd():
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64)
    level = nn.Sequential(nn.Conv2d(2, 2, 1, dtype=np.float64),
                          nn.ConcatSkip(nn.Sequential(nn.MaxPool2d(2), conv, nn.Upsample(2))))
    first = level[0]
    tc, tf = torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64), torch.nn.Conv2d(2, 2, 1, dtype=torch.float64)
    with torch.no_grad():
        for ours, theirs in ((conv, tc), (first, tf)):
            theirs.weight.copy_(torch.tensor(ours.weight.data))
            theirs.bias.copy_(torch.tensor(ours.bias.data))

    def torch_level(v):
        h = tf(v)
        return torch.cat([h, F.interpolate(tc(F.max_pool2d(h, 2)), scale_factor=2, mode="nearest")], dim=1)
    x = rng.standard_normal((2, 2, 6, 4))
    against_torch(level, torch_level, x, [(conv.weight, tc.weight), (first.weight, tf.weight),
                                          (first.bias, tf.bias)])
    check_fd(level, x)
    with pytest.raises(ValueError, match="keep the batch and spatial sizes"):
        nn.ConcatSkip(nn.MaxPool2d(2)).forward(x)


def test_concat_skip_on_volumes():
    level = nn.ConcatSkip(nn.Sequential(nn.MaxPool3d(2), nn.Conv3d(2, 1, 1, dtype=np.float64), nn.Upsample(2)))
    x = rng.standard_normal((1, 2, 4, 2, 4))
    y = level.forward(x)
    assert y.shape == (1, 3, 4, 2, 4)
    np.testing.assert_array_equal(y[:, :2], x)
    check_fd(level, x)


@pytest.mark.parametrize("shape", [(5, 4), (2, 4, 3, 5), (2, 3, 2, 3, 4)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [False, True])
def test_cross_entropy_dense_weight_ignore_match_torch(shape, weighted, ignore):
    K = shape[1]
    logits = rng.standard_normal(shape) * 3
    targets = rng.integers(0, K, (shape[0],) + shape[2:])
    if ignore:
        targets.reshape(-1)[::3] = 255
    weight = rng.uniform(0.2, 2.0, K) if weighted else None
    crit = nn.CrossEntropyLoss(weight=weight, ignore_index=255 if ignore else -100)
    loss = crit(logits, targets)
    d = crit.backward()
    tl = t(logits)
    tref = F.cross_entropy(tl, torch.tensor(targets), weight=None if weight is None else torch.tensor(weight),
                           ignore_index=255 if ignore else -100)
    tref.backward()
    assert abs(loss - tref.item()) <= 1e-10 * abs(tref.item())
    np.testing.assert_allclose(d, tl.grad.numpy(), **TOL)
    counted = targets != (255 if ignore else -100)
    assert crit.count == counted.sum()
    assert crit.correct == np.sum(counted & (logits.argmax(axis=1) == targets))
    # finite differences of the loss itself
    np.testing.assert_allclose(d, numeric_grad(lambda: crit(logits, targets), logits), rtol=1e-6, atol=1e-9)


def test_cross_entropy_split_map_sums_to_whole():
    """Blocks of a map with the global divisor: losses and gradients add up to the whole's."""
    logits = rng.standard_normal((2, 3, 6, 4))
    targets = rng.integers(0, 3, (2, 6, 4))
    crit = nn.CrossEntropyLoss(weight=[1.0, 2.0, 0.5])
    whole = crit(logits, targets)
    dwhole = crit.backward()
    total = crit.weight_sum
    parts = []
    for rows in (slice(0, 2), slice(2, 6)):
        parts.append(crit(np.ascontiguousarray(logits[:, :, rows]), targets[:, rows], total=total))
        np.testing.assert_allclose(crit.backward(), dwhole[:, :, rows], rtol=1e-12, atol=1e-15)
    assert abs(sum(parts) - whole) <= 1e-12 * abs(whole)


def test_cross_entropy_rejects_bad_targets():
    with pytest.raises(ValueError, match="out of range"):
        nn.CrossEntropyLoss()(rng.standard_normal((2, 3, 4)), np.full((2, 4), 3))
    with pytest.raises(ValueError, match="shape"):
        nn.CrossEntropyLoss()(rng.standard_normal((2, 3, 4)), np.zeros((2, 5), int))


@pytest.mark.parametrize("shape", [(4, 3), (2, 2, 3, 4, 2)])
def test_mse_matches_torch(shape):
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    crit = nn.MSELoss()
    loss = crit(pred, target)
    d = crit.backward()
    tp = t(pred)
    tref = F.mse_loss(tp, torch.tensor(target))
    tref.backward()
    assert abs(loss - tref.item()) <= 1e-10 * tref.item()
    np.testing.assert_allclose(d, tp.grad.numpy(), **TOL)
    np.testing.assert_allclose(d, numeric_grad(lambda: crit(pred, target), pred), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_volume_layers_keep_dtype(dtype):
    x = rng.standard_normal((2, 2, 4, 4, 4)).astype(dtype)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1, dtype=dtype), nn.BatchNorm3d(4, dtype=dtype), nn.ReLU(),
                          nn.MaxPool3d(2), nn.Upsample(2), nn.AvgPool3d(2), nn.GlobalAvgPool3d())
    y = model.forward(x)
    assert y.dtype == dtype and y.shape == (2, 4)
    assert model.backward(np.ones_like(y)).dtype == dtype
