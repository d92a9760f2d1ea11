"""A model as a user would write one: the zoo's signature, mpicnn.nn layers."""
import itertools

import numpy as np

from mpicnn import nn


def build(in_channels=3, num_classes=10, dtype=np.float32, image_size=None, width=8):
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, dtype=dtype), nn.BatchNorm2d(width, dtype=dtype), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, dtype=dtype), nn.ReLU(),
        nn.MaxPool2d(2), nn.GlobalAvgPool2d(), nn.Linear(2 * width, num_classes, dtype=dtype))


def linear_only(in_channels=3, num_classes=10, dtype=np.float32, image_size=None):
    """No convolution: flattened pixels into two linear layers."""
    features = in_channels * int(np.prod(image_size))
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 16, dtype=dtype), nn.ReLU(),
                         nn.Linear(16, num_classes, dtype=dtype))


def not_a_model(in_channels=3, num_classes=10, dtype=np.float32, image_size=None):
    return [nn.ReLU()]


class Center(nn.Module):
    """x minus its per-channel mean over the whole map: a spatial reduction, declared."""
    touches = "spatial-reduction"

    def forward(self, x):
        return x - self.spatial_mean(x)

    def backward(self, dy):
        return dy - self.spatial_mean(dy)


class CenterUndeclared(nn.Module):
    """The same, computed on whatever block of the map this rank holds, and not declared."""

    def forward(self, x):
        return x - x.mean(axis=(2, 3), keepdims=True)

    def backward(self, dy):
        return dy - dy.mean(axis=(2, 3), keepdims=True)


def _centered(center, in_channels, num_classes, dtype):
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1, dtype=dtype), nn.ReLU(), center,
        nn.Conv2d(8, 8, 3, padding=1, dtype=dtype), nn.ReLU(), nn.GlobalAvgPool2d(),
        nn.Linear(8, num_classes, dtype=dtype))


def centered(in_channels=3, num_classes=10, dtype=np.float32, image_size=None):
    return _centered(Center(), in_channels, num_classes, dtype)


def centered_undeclared(in_channels=3, num_classes=10, dtype=np.float32, image_size=None):
    return _centered(CenterUndeclared(), in_channels, num_classes, dtype)


def _window_slices(offsets, out, stride):
    """Index of the input elements that window offset ``offsets`` reads for every output."""
    return (slice(None), slice(None)) + tuple(slice(o, o + s * (n - 1) + 1, s)
                                              for o, n, s in zip(offsets, out, stride))


class BoxBlur(nn.Module):
    """Mean of each 3x3 (3x3x3 for volumes) neighbourhood, zero padding: a window, declared,
    written in plain NumPy over whatever block of the map this rank holds."""
    touches = nn.Window(kernel=3, padding=1)

    def forward(self, x):
        p = self.window_input(x)
        self._shape = p.shape
        out = tuple(n - 2 for n in p.shape[2:])
        offsets = list(itertools.product(range(3), repeat=x.ndim - 2))
        return sum(p[_window_slices(o, out, (1,) * len(out))] for o in offsets) / len(offsets)

    def backward(self, dy):
        dp = np.zeros(self._shape, dy.dtype)
        offsets = list(itertools.product(range(3), repeat=dy.ndim - 2))
        for o in offsets:
            dp[_window_slices(o, dy.shape[2:], (1,) * (dy.ndim - 2))] += dy / len(offsets)
        return self.window_input_grad(dp)


class BoxBlurUndeclared(BoxBlur):
    """The same layer without its declaration."""
    touches = None

    def forward(self, x):
        p = np.pad(x, [(0, 0), (0, 0)] + [(1, 1)] * (x.ndim - 2))
        out = x.shape[2:]
        offsets = list(itertools.product(range(3), repeat=x.ndim - 2))
        return sum(p[_window_slices(o, out, (1,) * len(out))] for o in offsets) / len(offsets)


class DilatedDepthwise(nn.Module):
    """A 3x3 filter per channel, dilation 2 (zero padding 2), with its own weights."""
    touches = nn.Window(kernel=3, padding=2, dilation=2)

    def __init__(self, channels, dtype=np.float64):
        super().__init__()
        self.weight = nn.Parameter(np.random.default_rng(7).standard_normal((channels, 3, 3)).astype(dtype) / 3)

    def forward(self, x):
        self._p = p = self.window_input(x)
        h, w = p.shape[2] - 4, p.shape[3] - 4
        return sum(self.weight.data[:, i, j, None, None] * p[:, :, 2 * i:2 * i + h, 2 * j:2 * j + w]
                   for i in range(3) for j in range(3))

    def backward(self, dy):
        p, (h, w) = self._p, dy.shape[2:]
        dp = np.zeros_like(p)
        for i in range(3):
            for j in range(3):
                tap = p[:, :, 2 * i:2 * i + h, 2 * j:2 * j + w]
                self.weight.grad[:, i, j] += (dy * tap).sum(axis=(0, 2, 3))
                dp[:, :, 2 * i:2 * i + h, 2 * j:2 * j + w] += self.weight.data[:, i, j, None, None] * dy
        return self.window_input_grad(dp)


class StridedMax(nn.Module):
    """Max over 3x3 windows with stride 2, -inf padding 1: a window that halves the map."""
    touches = nn.Window(kernel=3, stride=2, padding=1, fill=-np.inf)

    def forward(self, x):
        p = self.window_input(x)
        self._shape = p.shape
        out = tuple((n - 3) // 2 + 1 for n in p.shape[2:])
        taps = np.stack([p[_window_slices(o, out, (2, 2))] for o in itertools.product(range(3), repeat=2)])
        self._first = taps.argmax(axis=0)  # the gradient goes to the first maximum
        return taps.max(axis=0)

    def backward(self, dy):
        dp = np.zeros(self._shape, dy.dtype)
        for k, o in enumerate(itertools.product(range(3), repeat=2)):
            dp[_window_slices(o, dy.shape[2:], (2, 2))] += dy * (self._first == k)
        return self.window_input_grad(dp)


def windows(in_channels=3, num_classes=10, dtype=np.float32, image_size=None):
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1, dtype=dtype), nn.ReLU(), BoxBlur(), DilatedDepthwise(8, dtype),
        nn.ReLU(), StridedMax(), nn.Conv2d(8, 8, 3, padding=1, dtype=dtype), nn.ReLU(), nn.GlobalAvgPool2d(),
        nn.Linear(8, num_classes, dtype=dtype))


def windows_undeclared(in_channels=3, num_classes=10, dtype=np.float32, image_size=None):
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1, dtype=dtype), nn.ReLU(), BoxBlurUndeclared(),
        nn.GlobalAvgPool2d(), nn.Linear(8, num_classes, dtype=dtype))


def blurred_volumes(in_channels=1, num_classes=2, dtype=np.float32, image_size=None):
    """A regression model on volumes with the blur and the centring of one's own between
    3-D convs."""
    return nn.Sequential(
        nn.Conv3d(in_channels, 4, 3, padding=1, dtype=dtype), nn.ReLU(), BoxBlur(), Center(),
        nn.Conv3d(4, 4, 3, padding=1, dtype=dtype), nn.ReLU(), nn.GlobalAvgPool3d(),
        nn.Linear(4, num_classes, dtype=dtype))


def three_outputs(in_channels=3, num_classes=10, dtype=np.float32, image_size=None):
    """A head of a fixed 3 outputs, whatever the dataset's classes."""
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1, dtype=dtype), nn.ReLU(), nn.GlobalAvgPool2d(),
                         nn.Linear(8, 3, dtype=dtype))


def always_float64(in_channels=3, num_classes=10, dtype=np.float32, image_size=None):
    """Ignores the dtype it is given."""
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1, dtype=np.float64), nn.ReLU(),
                         nn.GlobalAvgPool2d(), nn.Linear(8, num_classes, dtype=np.float64))
