"""Layers (NCHW publicly, NHWC inside where faster), containers, loss and init."""
from . import init, optim, schedule
from .activation import LeakyReLU, ReLU
from .container import Residual, Sequential
from .conv import Conv2d
from .dropout import Dropout
from .linear import Linear
from .loss import CrossEntropyLoss
from .module import Context, Module, Parameter
from .norm import BatchNorm2d
from .pool import (AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, GlobalRMSPool2d, MaxPool2d,
                   swap_relu_maxpool)
from .shape import Flatten

__all__ = [
    "Module", "Parameter", "Context", "Sequential", "Residual",
    "Conv2d", "Linear", "ReLU", "LeakyReLU",
    "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d", "GlobalRMSPool2d",
    "BatchNorm2d", "Dropout", "Flatten", "CrossEntropyLoss", "init", "optim", "schedule", "swap_relu_maxpool",
]
