"""Layers (NCHW publicly, NHWC inside where faster), containers, loss and init."""
from . import init, optim, schedule
from .activation import LeakyReLU, ReLU
from .concat import ConcatSkip
from .container import Residual, Sequential, skip_input_gradient
from .conv import Conv2d
from .conv3d import Conv3d
from .dropout import Dropout
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Context, Module, Parameter, Window
from .norm import BatchNorm2d
from .norm3d import BatchNorm3d
from .pool import (AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, GlobalRMSPool2d, MaxPool2d,
                   swap_relu_maxpool)
from .pool3d import AvgPool3d, GlobalAvgPool3d, GlobalMaxPool3d, GlobalRMSPool3d, MaxPool3d
from .shape import Flatten
from .upsample import Upsample

__all__ = [
    "Module", "Parameter", "Context", "Window", "Sequential", "Residual",
    "Conv2d", "Linear", "ReLU", "LeakyReLU",
    "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d", "GlobalRMSPool2d",
    "BatchNorm2d", "Dropout", "Flatten", "CrossEntropyLoss",
    "Conv3d", "MaxPool3d", "AvgPool3d", "GlobalAvgPool3d", "GlobalMaxPool3d", "GlobalRMSPool3d",
    "BatchNorm3d", "Upsample", "ConcatSkip", "MSELoss", "init", "optim", "schedule", "swap_relu_maxpool",
    "skip_input_gradient",
]
