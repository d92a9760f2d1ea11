"""Optimizers and schedules against closed forms (and PyTorch when it is installed)."""
import math

import numpy as np
import pytest

from mpicnn.nn.module import Parameter
from mpicnn.nn.optim import SGD, Adam, AdamW
from mpicnn.nn.schedule import make_schedule

from tools import TORCH_INSTALL, require_module


def quadratic_run(opt_cls, steps=5, dtype=np.float64, **kw):
    """Minimise 0.5*|w|^2 (gradient = w) from a fixed start; return the trajectory."""
    p = Parameter(np.array([1.0, -2.0, 3.0], dtype=dtype))
    opt = opt_cls([("w", p)], **kw)
    out = []
    for _ in range(steps):
        p.grad[...] = p.data
        opt.step()
        opt.zero_grad()
        out.append(p.data.copy())
    return np.array(out)


def test_sgd_plain_closed_form():
    traj = quadratic_run(SGD, lr=0.1)
    expected = np.array([1.0, -2.0, 3.0]) * 0.9 ** np.arange(1, 6)[:, None]
    np.testing.assert_allclose(traj, expected, rtol=1e-14)


def test_sgd_momentum_by_hand():
    lr, mu, wd = 0.1, 0.9, 0.01
    traj = quadratic_run(SGD, lr=lr, momentum=mu, weight_decay=wd, steps=3)
    w = np.array([1.0, -2.0, 3.0])
    buf = None
    for t in range(3):
        d = w + wd * w
        buf = d if buf is None else mu * buf + d
        w = w - lr * buf
        np.testing.assert_allclose(traj[t], w, rtol=1e-14)


def test_nesterov_by_hand():
    lr, mu = 0.1, 0.9
    traj = quadratic_run(SGD, lr=lr, momentum=mu, nesterov=True, steps=3)
    w = np.array([1.0, -2.0, 3.0])
    buf = None
    for t in range(3):
        buf = w.copy() if buf is None else mu * buf + w
        w = w - lr * (w + mu * buf)
        np.testing.assert_allclose(traj[t], w, rtol=1e-14)


def test_adam_by_hand_and_adamw_decouples():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    for cls in (Adam, AdamW):
        traj = quadratic_run(cls, lr=lr, weight_decay=wd, steps=4)
        w = np.array([1.0, -2.0, 3.0])
        m = v = np.zeros(3)
        for t in range(1, 5):
            g = w.copy()
            if cls is AdamW:
                w = w * (1 - lr * wd)
            else:
                g = g + wd * w
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            w = w - lr / (1 - b1 ** t) * m / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps)
            np.testing.assert_allclose(traj[t - 1], w, rtol=1e-12)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_float32_stays_float32(cls):
    kw = {"lr": 0.1, "momentum": 0.9} if cls is SGD else {"lr": 0.1}
    traj = quadratic_run(cls, dtype=np.float32, **kw)
    assert traj.dtype == np.float32


def test_frozen_parameters_do_not_move_and_lr_scale_applies():
    a, b, c = (Parameter(np.ones(2)) for _ in range(3))
    b.requires_grad = False
    opt = SGD([("a", a), ("b", b), ("c", c)], lr=0.5, lr_scale={"c": 2.0})
    for p in (a, b, c):
        p.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(a.data, [0.5, 0.5])
    np.testing.assert_array_equal(b.data, [1.0, 1.0])
    np.testing.assert_array_equal(c.data, [0.0, 0.0])


def test_state_dict_round_trip_continues_identically():
    full = quadratic_run(Adam, lr=0.05, steps=6)
    p = Parameter(np.array([1.0, -2.0, 3.0]))
    opt = Adam([("w", p)], lr=0.05)
    for _ in range(3):
        p.grad[...] = p.data
        opt.step()
    saved = {"steps": opt.steps, "params": {"w": {k: v.copy() for k, v in opt.state["w"].items()}}}
    p2 = Parameter(p.data.copy())
    opt2 = Adam([("w", p2)], lr=0.05)
    opt2.load_state_dict(saved)
    for _ in range(3):
        p2.grad[...] = p2.data
        opt2.step()
    np.testing.assert_array_equal(p2.data, full[-1])


def test_against_torch():
    torch = require_module("torch", TORCH_INSTALL)
    for name, kw in [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
                     ("Adam", dict(lr=0.01, weight_decay=0.01)), ("AdamW", dict(lr=0.01, weight_decay=0.1))]:
        ours = quadratic_run({"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[name], steps=5, **kw)
        w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
        opt = getattr(torch.optim, name)([w], **kw)
        for t in range(5):
            opt.zero_grad()
            (0.5 * (w * w).sum()).backward()
            opt.step()
            np.testing.assert_allclose(ours[t], w.detach().numpy(), rtol=1e-12)


def test_schedules():
    const = make_schedule("constant", 0.1, 100, warmup=10)
    assert const(0) == pytest.approx(0.01) and const(9) == pytest.approx(0.1) and const(50) == 0.1
    step = make_schedule("step", 1.0, 100, step_size=10, gamma=0.5)
    assert [step(s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cos = make_schedule("cosine", 1.0, 110, warmup=10)
    assert cos(10) == pytest.approx(1.0) and cos(60) == pytest.approx(0.5) and cos(110) == pytest.approx(0.0)
    assert all(cos(s) >= cos(s + 1) for s in range(10, 110))
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("linear", 1.0, 10)
