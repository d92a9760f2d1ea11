"""A user's module with a mistake that shows when it is imported (a missing import)."""
from mpicnn import nn


def build(in_channels=3, num_classes=10, dtype=np.float32, image_size=None):  # noqa: F821 (the mistake)
    return nn.Sequential(nn.GlobalAvgPool2d(), nn.Linear(in_channels, num_classes, dtype=dtype))
