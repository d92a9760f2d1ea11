"""A model as a user would write one: the zoo's signature, mpicnn.nn layers."""
import numpy as np

from mpicnn import nn


def build(in_channels=3, num_classes=10, dtype=np.float32, image_size=None, width=8):
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, dtype=dtype), nn.BatchNorm2d(width, dtype=dtype), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, dtype=dtype), nn.ReLU(),
        nn.MaxPool2d(2), nn.GlobalAvgPool2d(), nn.Linear(2 * width, num_classes, dtype=dtype))


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
