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
