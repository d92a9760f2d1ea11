"""The model zoo: ``get(name, in_channels, num_classes, **options)``; ``name`` may also
be ``package.module:function``, a user's builder with the zoo's signature.

Every model is a ``Sequential`` of ``mpicnn.nn`` layers, so parameter names follow
PyTorch's (``0.weight``, ``3.block.0.weight`` ...) and checkpoints can be read by
hand. Layers are created in a fixed order from the init RNG, so the same seed gives
the same weights on every rank.

Where a max pool follows a ReLU, the models run the pool first (``MaxPool2d, ReLU``):
max commutes with ReLU, so values and gradients are those of ``ReLU, MaxPool2d``
(``nn.swap_relu_maxpool``), and the ReLU touches 4x fewer elements; neither layer has
parameters, so the parameter names are PyTorch's for the usual order.
"""
import importlib
import inspect

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


def cosmoflow(in_channels=4, num_classes=4, dtype=np.float32, image_size=(32, 32, 32), width=16, stages=4):
    """CosmoFlow-shaped regressor (Mathuriya et al. 2018, MLPerf HPC) for (C, D, H, W)
    volumes: ``stages`` of (3x3x3 conv-BN-LeakyReLU, 2x2x2 max pool), widths
    width*(1, 2, 4, 4...), a global average pool and an MLP head (64, 32) whose
    ``num_classes`` outputs are the regression targets. Any cube of 16 or more voxels."""
    if image_size is not None and (len(image_size) != 3 or min(image_size) < 2 ** stages):
        raise ValueError(f"cosmoflow takes (D, H, W) volumes of at least {2 ** stages} voxels a side "
                         f"(with {stages} pooling stages), got {'x'.join(map(str, image_size))}")
    layers, c = [], in_channels
    for i in range(stages):
        cout = width * 2 ** min(i, 2)
        layers += [nn.Conv3d(c, cout, 3, padding=1, bias=False, dtype=dtype), nn.BatchNorm3d(cout, dtype=dtype),
                   nn.LeakyReLU(0.3), nn.MaxPool3d(2)]
        c = cout
    return nn.Sequential(*layers, nn.GlobalAvgPool3d(),
                         nn.Linear(c, 64, dtype=dtype), nn.LeakyReLU(0.3),
                         nn.Linear(64, 32, dtype=dtype), nn.LeakyReLU(0.3),
                         nn.Linear(32, num_classes, dtype=dtype))


def _unet_depth(image_size, depth, most, name):
    """``depth`` checked against ``image_size``; None: the deepest <= ``most`` whose 2**depth
    divides every side (each level halves the map and upsamples it back)."""
    sizes = tuple(image_size) if image_size is not None else ()
    if depth is None:
        depth = most
        while depth > 1 and any(s % 2 ** depth for s in sizes):
            depth -= 1
    if depth < 1 or any(s % 2 ** depth for s in sizes):
        raise ValueError(f"{name} with depth {depth} needs sides divisible by {2 ** max(depth, 1)}, got "
                         f"{'x'.join(map(str, sizes))}; use sides that halve {max(depth, 1)} times")
    return depth


def _unet(dims, in_channels, num_classes, dtype, width, depth):
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d

    def double_conv(cin, cout):
        return [conv(cin, cout, 3, padding=1, bias=False, dtype=dtype), norm(cout, dtype=dtype), nn.ReLU(),
                conv(cout, cout, 3, padding=1, bias=False, dtype=dtype), norm(cout, dtype=dtype), nn.ReLU()]

    def level(d, cin, c):
        # encoder convs, then (deeper levels at half the size, upsampled) concatenated, decoder convs
        if d == 0:
            return double_conv(cin, c)
        inner = nn.Sequential(pool(2), *level(d - 1, c, 2 * c), nn.Upsample(2),
                              conv(2 * c, c, 1, dtype=dtype))
        return double_conv(cin, c) + [nn.ConcatSkip(inner)] + double_conv(2 * c, c)

    return nn.Sequential(*level(depth, in_channels, width), conv(width, num_classes, 1, dtype=dtype))


def unet(in_channels=3, num_classes=2, dtype=np.float32, image_size=None, width=16, depth=None):
    """2-D U-Net (Ronneberger et al. 2015) with same-padded convs and BatchNorm: per-pixel
    logits (N, num_classes, H, W). ``depth`` levels of (two 3x3 conv-BN-ReLU, 2x2 max pool)
    down, nearest upsampling, a 1x1 conv and channel concatenation with the skip up; None:
    the deepest (at most 3) that the image sides allow."""
    return _unet(2, in_channels, num_classes, dtype, width, _unet_depth(image_size, depth, 3, "unet"))


def unet3d(in_channels=1, num_classes=2, dtype=np.float32, image_size=None, width=8, depth=None):
    """Small 3-D U-Net (Cicek et al. 2016) on (C, D, H, W) volumes, per-voxel logits
    (N, num_classes, D, H, W); as ``unet`` with 3x3x3 convs (depth at most 2 by default)."""
    return _unet(3, in_channels, num_classes, dtype, width, _unet_depth(image_size, depth, 2, "unet3d"))


MODELS = {"lenet5": lenet5, "convnet": convnet, "resnet8": resnet8, "resnet20": resnet20, "vgg11": vgg11,
          "cosmoflow": cosmoflow, "unet": unet, "unet3d": unet3d}
# What each zoo model takes and gives: (spatial axes of a sample, per-pixel outputs).
SHAPES = {"lenet5": (2, False), "convnet": (2, False), "resnet8": (2, False), "resnet20": (2, False),
          "vgg11": (2, False), "cosmoflow": (3, False), "unet": (2, True), "unet3d": (3, True)}
_SAMPLES = {2: "images (C, H, W)", 3: "volumes (C, D, H, W)"}


def check_fits_data(name, sample_shape, task):
    """Raise ValueError, naming zoo models that would fit, where zoo model ``name`` cannot
    train on samples of ``sample_shape`` (C, ...) for ``task``: images against volumes, or
    per-pixel outputs against one output per sample. A user's own builder is not checked."""
    if name not in SHAPES:
        return
    axes, dense = SHAPES[name]
    given, wants_dense = len(sample_shape) - 1, task == "segmentation"
    fits = [n for n, (a, d) in SHAPES.items() if a == given and d == wants_dense]
    hint = f"; use --model {' or '.join(fits)}" if fits else ""
    if axes != given:
        raise ValueError(f"{name} takes {_SAMPLES[axes]}, and the dataset holds "
                         f"{_SAMPLES.get(given, f'{given}-D samples')}{hint}")
    if dense != wants_dense:
        gives = "a class per pixel (segmentation)" if dense else "one output per sample"
        raise ValueError(f"{name} predicts {gives}, and the dataset is a {task} dataset{hint}")
STANDARD = ("in_channels", "num_classes", "dtype", "image_size")  # what every builder is given


def builder(name):
    """The function that builds model ``name``: a zoo name, or ``package.module:function``
    (a user's own builder, imported from ``sys.path`` as PYTHONPATH users expect)."""
    if name in MODELS:
        return MODELS[name]
    if ":" not in name:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}, or name your own "
                         f"builder as package.module:function")
    module, _, function = name.partition(":")
    try:
        found = getattr(importlib.import_module(module), function, None)
    except ImportError as e:
        raise ValueError(f"cannot import {module!r} ({e}); put the folder that holds it on PYTHONPATH")
    except Exception as e:  # the user's module failed as it ran: say where, in one line
        raise ValueError(f"importing {module!r} failed: {type(e).__name__}: {e}") from None
    if not callable(found):
        raise ValueError(f"module {module!r} has no function {function!r}")
    return found


def options_of(build):
    """The keyword options ``build`` takes beyond the standard ones (None: any, **kwargs)."""
    params = inspect.signature(build).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name not in STANDARD]


def get(name, in_channels, num_classes, dtype=np.float32, image_size=None, **options):
    """Build model ``name`` (see ``builder``) as ``build(in_channels=, num_classes=, dtype=,
    image_size=, **options)``; ``options`` are its own keywords (e.g. ``width``)."""
    build = builder(name)
    takes = options_of(build)
    unknown = [k for k in options if takes is not None and k not in takes]
    if unknown:
        what = ", ".join(f"--{k.replace('_', '-')}" for k in takes) if takes else "none"
        raise ValueError(f"{name} does not take {', '.join('--' + k.replace('_', '-') for k in unknown)}; "
                         f"the options it takes: {what}")
    kwargs = dict(in_channels=in_channels, num_classes=num_classes, dtype=np.dtype(dtype).type, **options)
    if image_size is not None:
        kwargs["image_size"] = tuple(image_size)
    model = build(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name} returned {type(model).__name__!r}, not an mpicnn.nn.Module")
    return model


def check_user_model(model, num_classes, dtype):
    """Raise ValueError where a user's builder made a model the run cannot train: a
    parameter of another dtype than ``dtype`` (the layers must take the builder's
    ``dtype``), or a head (``head_of``) whose outputs are not the dataset's
    ``num_classes`` classes or targets. Found at start, not as a shape or dtype error in
    the first step."""
    named = list(model.named_parameters())
    other = next(((n, p) for n, p in named if p.data.dtype != np.dtype(dtype)), None)
    if other:
        raise ValueError(f"its parameter {other[0]!r} is {other[1].data.dtype}, the run's --dtype is "
                         f"{np.dtype(dtype)}: build every layer with the builder's dtype argument")
    if any(p.data.ndim >= 2 for _, p in named):
        name, head = head_of(model)
        if head.data.shape[0] != num_classes:
            raise ValueError(f"its head {name!r} has {head.data.shape[0]} outputs and the dataset {num_classes} "
                             f"classes (or targets): build the last layer with the builder's num_classes")


def head_of(model):
    """(name, parameter) of the model's head weight, its last with two or more axes (a
    Linear's, or the 1x1 conv's of a U-Net): the first axis counts the model's outputs."""
    return [(n, p) for n, p in model.named_parameters() if p.data.ndim >= 2][-1]


def with_weights(name, in_channels, params, buffers, dtype=np.float32, image_size=None, **options):
    """Model ``name`` (``get``) holding the saved ``params`` and ``buffers``, with as many
    outputs as its head weight there has (``head_of``). Raises KeyError, ValueError or
    TypeError where they do not fit."""
    with nn.init.deferred():  # a probe without memory: which tensor is the head, in model order
        probe = get(name, in_channels, 1, dtype, image_size, **options)
    probe.forget()
    head, _ = head_of(probe)
    model = get(name, in_channels, params[head].shape[0], dtype, image_size, **options)
    model.load_state_dict({**params, **buffers})
    return model
