"""An mpicnn model as an ONNX graph (eval mode: BatchNorm with running statistics,
Dropout as identity), for ONNX Runtime and the tools that read ONNX.

    proto = to_onnx(model, (C, H, W))     # input "input" (N, C, H, W), output "logits" (N, K)
    proto = to_onnx(unet, (C, H, W))      # dense output "logits" (N, K, H, W)
    proto = to_onnx(cosmoflow, (C, D, H, W))

Every layer maps to standard operators (opset 17): Conv, BatchNormalization, Relu,
LeakyRelu, MaxPool, AveragePool, GlobalAveragePool/GlobalMaxPool + Flatten, Flatten,
Gemm, Add for residual sums; the 2-D and 3-D layers alike (Conv3d, MaxPool3d, AvgPool3d,
BatchNorm3d, the 3-D global pools), Resize (nearest, asymmetric, floor: the source
index of output i is floor(i / factor)) for Upsample, Concat along the channels for
ConcatSkip. Weights are initializers under their PyTorch names
(``0.weight``, ``3.block.0.weight`` ...). Needs the ``onnx`` package (``pip install
'mpicnn[export]'``), imported only here.
"""
import copy

import numpy as np

from .. import nn
from ..errors import UserError

OPSET = 17
IR_VERSION = 8          # the IR of opset 17: readable by ONNX Runtime 1.13 and newer


def to_onnx(model, input_shape, opset=OPSET):
    """The ONNX ModelProto of ``model`` (float32 or float64) for inputs (N, *input_shape)."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'mpicnn[export]'") from None
    dtype = np.dtype(next(p.data.dtype for p in model.parameters()))
    elem = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE}.get(dtype)
    if elem is None:
        raise UserError(f"ONNX export of a {dtype} model is not supported; train with --dtype float32 or float64")
    graph = _Graph(helper, numpy_helper, dtype, len(input_shape) - 1)
    graph.nodes.append(helper.make_node("Identity", [graph.emit(model, "input", "")], ["logits"], name="logits"))
    proto = helper.make_model(
        helper.make_graph(graph.nodes, "mpicnn",
                          [helper.make_tensor_value_info("input", elem, ["N", *map(int, input_shape)])],
                          [helper.make_tensor_value_info("logits", elem, ["N", *output_shape(model, input_shape)])],
                          initializer=graph.initializers),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="mpicnn", ir_version=IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def output_shape(model, input_shape):
    """The model's output shape for one sample of ``input_shape``: one eval-mode forward
    pass of a zero sample on a copy of the model (the model itself keeps its state)."""
    twin = copy.deepcopy(model).eval()
    dtype = next(p.data.dtype for p in model.parameters())
    return tuple(int(d) for d in twin.forward(np.zeros((1, *input_shape), dtype)).shape[1:])


class _Graph:
    """Nodes and initializers, emitted layer by layer; each layer's output a fresh name."""

    def __init__(self, helper, numpy_helper, dtype, spatial_axes):
        self.helper, self.numpy_helper, self.dtype = helper, numpy_helper, dtype
        self.spatial_axes = spatial_axes  # of the input: 2 for images, 3 for volumes
        self.nodes, self.initializers, self.count = [], [], 0

    def constant(self, name, array):
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, **attrs):
        self.count += 1
        out = f"{op.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def emit(self, m, x, prefix):
        """Add module ``m`` (parameters named ``prefix`` + attribute) applied to ``x``."""
        emitter = _EMITTERS.get(type(m))
        if emitter is None:
            raise UserError(f"layer {prefix.rstrip('.') or 'model'} ({type(m).__name__}) has no ONNX export")
        return emitter(self, m, x, prefix)


def _param(g, m, name, prefix):
    p = getattr(m, name)
    return g.constant(prefix + name, p.data.astype(g.dtype, copy=False))


def _sequential(g, m, x, prefix):
    for name, child in m.named_children():
        x = g.emit(child, x, f"{prefix}{name}.")
    return x


def _residual(g, m, x, prefix):
    y = g.emit(m.block, x, prefix + "block.")
    shortcut = getattr(m, "shortcut", None)
    s = g.emit(shortcut, x, prefix + "shortcut.") if shortcut is not None else x
    return g.node("Add", [y, s])


def _conv(g, m, x, prefix):
    inputs = [x, _param(g, m, "weight", prefix)] + ([_param(g, m, "bias", prefix)] if m.bias is not None else [])
    return g.node("Conv", inputs, kernel_shape=list(m.kernel_size), strides=list(m.stride),
                  pads=list(m.padding) * 2, dilations=list(m.dilation), group=m.groups)


def _batchnorm(g, m, x, prefix):
    if not m.track_running_stats:
        raise UserError(f"layer {prefix.rstrip('.')}: {type(m).__name__} without running statistics normalises "
                        f"with the batch's own in eval mode, which ONNX's BatchNormalization cannot express")
    ones, zeros = np.ones(m.num_features, g.dtype), np.zeros(m.num_features, g.dtype)
    scale = _param(g, m, "weight", prefix) if m.affine else g.constant(prefix + "weight", ones)
    shift = _param(g, m, "bias", prefix) if m.affine else g.constant(prefix + "bias", zeros)
    mean = g.constant(prefix + "running_mean", np.asarray(m.running_mean, g.dtype))
    var = g.constant(prefix + "running_var", np.asarray(m.running_var, g.dtype))
    return g.node("BatchNormalization", [x, scale, shift, mean, var], epsilon=m.eps)


def _linear(g, m, x, prefix):
    inputs = [x, _param(g, m, "weight", prefix)] + ([_param(g, m, "bias", prefix)] if m.bias is not None else [])
    return g.node("Gemm", inputs, transB=1)


def _window_pool(op, **extra):
    def emit(g, m, x, prefix):
        return g.node(op, [x], kernel_shape=list(m.kernel_size), strides=list(m.stride),
                      pads=list(m.padding) * 2, **extra)
    return emit


def _global_pool(op):
    def emit(g, m, x, prefix):
        return g.node("Flatten", [g.node(op, [x])], axis=1)      # (N, C, 1, 1) -> (N, C)
    return emit


def _global_rms_pool(g, m, x, prefix):
    mean_square = g.node("GlobalAveragePool", [g.node("Mul", [x, x])])
    eps = g.constant(f"{prefix}eps", np.array(m.eps, g.dtype))
    return g.node("Flatten", [g.node("Sqrt", [g.node("Add", [mean_square, eps])])], axis=1)


def _upsample(g, m, x, prefix):
    # Resize's scales cover every axis, batch and channels included; one factor is the
    # factor of every spatial axis of the model's input
    factors = m.scale_factor * g.spatial_axes if len(m.scale_factor) == 1 else m.scale_factor
    scales = g.constant(f"{prefix}scales", np.array([1, 1, *factors], np.float32))
    return g.node("Resize", [x, "", scales], mode="nearest", nearest_mode="floor",
                  coordinate_transformation_mode="asymmetric")


def _concat_skip(g, m, x, prefix):
    return g.node("Concat", [x, g.emit(m.block, x, prefix + "block.")], axis=1)


_EMITTERS = {
    nn.Sequential: _sequential,
    nn.Residual: _residual,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
    nn.BatchNorm2d: _batchnorm,
    nn.BatchNorm3d: _batchnorm,
    nn.Linear: _linear,
    nn.ReLU: lambda g, m, x, prefix: g.node("Relu", [x]),
    nn.LeakyReLU: lambda g, m, x, prefix: g.node("LeakyRelu", [x], alpha=m.negative_slope),
    nn.MaxPool2d: _window_pool("MaxPool"),
    nn.AvgPool2d: _window_pool("AveragePool", count_include_pad=1),
    nn.GlobalAvgPool2d: _global_pool("GlobalAveragePool"),
    nn.GlobalMaxPool2d: _global_pool("GlobalMaxPool"),
    nn.GlobalRMSPool2d: _global_rms_pool,
    nn.MaxPool3d: _window_pool("MaxPool"),
    nn.AvgPool3d: _window_pool("AveragePool", count_include_pad=1),
    nn.GlobalAvgPool3d: _global_pool("GlobalAveragePool"),
    nn.GlobalMaxPool3d: _global_pool("GlobalMaxPool"),
    nn.GlobalRMSPool3d: _global_rms_pool,
    nn.Upsample: _upsample,
    nn.ConcatSkip: _concat_skip,
    nn.Flatten: lambda g, m, x, prefix: g.node("Flatten", [x], axis=1),
    nn.Dropout: lambda g, m, x, prefix: g.node("Identity", [x]),
}
