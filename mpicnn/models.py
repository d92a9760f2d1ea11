"""The model zoo: ``get(name, in_channels, num_classes, **options)``.

Every model is a ``Sequential`` of ``mpicnn.nn`` layers, so parameter names follow
PyTorch's (``0.weight``, ``3.block.0.weight`` ...) and checkpoints can be read by
hand. Layers are created in a fixed order from the init RNG, so the same seed gives
the same weights on every rank.

Where a max pool follows a ReLU, the models run the pool first (``MaxPool2d, ReLU``):
max commutes with ReLU, so values and gradients are those of ``ReLU, MaxPool2d``
(``nn.swap_relu_maxpool``), and the ReLU touches 4x fewer elements; neither layer has
parameters, so the parameter names are PyTorch's for the usual order.
"""
import numpy as np

from . import nn


def conv_bn_relu(cin, cout, stride=1, dtype=np.float32):
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, dtype=dtype),
            nn.BatchNorm2d(cout, dtype=dtype), nn.ReLU()]


def lenet5(in_channels=1, num_classes=10, dtype=np.float32, image_size=(28, 28)):
    """LeNet-5 with ReLU and max pooling, for 28x28 inputs (the first conv pads by 2)."""
    if tuple(image_size) != (28, 28):
        raise ValueError(f"lenet5 expects 28x28 images, got {image_size[0]}x{image_size[1]}; "
                         "use --model convnet for other sizes")
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, dtype=dtype), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(6, 16, 5, dtype=dtype), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, dtype=dtype), nn.ReLU(),
        nn.Linear(120, 84, dtype=dtype), nn.ReLU(),
        nn.Linear(84, num_classes, dtype=dtype),
    )


def convnet(in_channels=3, num_classes=10, dtype=np.float32, image_size=None, width=16, stages=3):
    """conv-BN-ReLU stem, then ``stages`` stages of (stride-2 conv, conv), doubling width;
    global average pool and a linear head. Any input of at least 2**stages pixels."""
    if image_size is not None and min(image_size) < 2 ** stages:
        raise ValueError(f"convnet with {stages} stride-2 stages needs images of at least "
                         f"{2 ** stages} px, got {image_size[0]}x{image_size[1]}")
    layers = conv_bn_relu(in_channels, width, dtype=dtype)
    c = width
    for _ in range(stages):
        layers += conv_bn_relu(c, 2 * c, stride=2, dtype=dtype) + conv_bn_relu(2 * c, 2 * c, dtype=dtype)
        c *= 2
    return nn.Sequential(*layers, nn.GlobalAvgPool2d(), nn.Linear(c, num_classes, dtype=dtype))


def basic_block(cin, cout, stride, dtype):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus a (1x1 conv + BN when the shape changes)
    shortcut, ReLU after the sum."""
    block = nn.Sequential(*conv_bn_relu(cin, cout, stride, dtype),
                          nn.Conv2d(cout, cout, 3, padding=1, bias=False, dtype=dtype),
                          nn.BatchNorm2d(cout, dtype=dtype))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False, dtype=dtype),
                                 nn.BatchNorm2d(cout, dtype=dtype))
    return [nn.Residual(block, shortcut), nn.ReLU()]


def cifar_resnet(blocks_per_stage, in_channels, num_classes, dtype, width=16):
    layers = conv_bn_relu(in_channels, width, dtype=dtype)
    c = width
    for stage in range(3):
        cout = width * 2 ** stage
        for b in range(blocks_per_stage):
            layers += basic_block(c, cout, 2 if stage > 0 and b == 0 else 1, dtype)
            c = cout
    return nn.Sequential(*layers, nn.GlobalAvgPool2d(), nn.Linear(c, num_classes, dtype=dtype))


def resnet8(in_channels=3, num_classes=10, dtype=np.float32, image_size=None, width=16):
    """CIFAR-style ResNet-8 (He et al. 2016): 3 stages of 1 basic block."""
    return cifar_resnet(1, in_channels, num_classes, dtype, width)


def resnet20(in_channels=3, num_classes=10, dtype=np.float32, image_size=None, width=16):
    """CIFAR-style ResNet-20: 3 stages of 3 basic blocks."""
    return cifar_resnet(3, in_channels, num_classes, dtype, width)


VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11(in_channels=3, num_classes=10, dtype=np.float32, image_size=(32, 32), width=64):
    """VGG-11 with BatchNorm; ``width`` is the first stage's channels (64 in the paper),
    later stages scale with it. Pools that would shrink the map below 1 px are left out;
    a global average pool feeds the linear classifier."""
    size = min(image_size) if image_size is not None else 32
    layers, c = [], in_channels
    for v in VGG11:
        if v == "M":
            if size >= 2:
                layers.insert(len(layers) - 1, nn.MaxPool2d(2))  # before the ReLU (module docstring)
                size //= 2
            continue
        cout = max(1, v * width // 64)
        layers += [nn.Conv2d(c, cout, 3, padding=1, dtype=dtype), nn.BatchNorm2d(cout, dtype=dtype), nn.ReLU()]
        c = cout
    return nn.Sequential(*layers, nn.GlobalAvgPool2d(), nn.Linear(c, num_classes, dtype=dtype))


MODELS = {"lenet5": lenet5, "convnet": convnet, "resnet8": resnet8, "resnet20": resnet20, "vgg11": vgg11}


def get(name, in_channels, num_classes, dtype=np.float32, image_size=None, **options):
    """Build model ``name``; ``options`` are the builder's keywords (e.g. ``width``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    kwargs = dict(in_channels=in_channels, num_classes=num_classes, dtype=np.dtype(dtype).type, **options)
    if image_size is not None:
        kwargs["image_size"] = tuple(image_size)
    return MODELS[name](**kwargs)
