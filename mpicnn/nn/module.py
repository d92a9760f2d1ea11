"""Module, Parameter and the layout protocol every layer follows.

A layer is a plain class: parameters are made in ``__init__``, ``forward`` computes,
``backward`` takes the gradient of the output and returns the gradient of the input,
accumulating (``+=``) parameter gradients into ``Parameter.grad`` so that several
backward passes (micro-batches, shared weights) add up.

Layout: the public layout of 4-D arrays is NCHW. A layer that is faster in another
layout sets ``layout = "NHWC"`` and implements ``_forward``/``_backward`` in it; its
public ``forward``/``backward`` convert at the edges. Containers chain the private
methods and convert only where two neighbours disagree, so a model of NHWC layers
converts once at the input. 2-D arrays (N, F) have no layout and pass unchanged.
Users' own layers just override ``forward``/``backward`` in NCHW, and say in ``touches``
how they mix elements, so that the trainer can split their feature maps correctly
(README, "Your own layers"): ``"pointwise"`` (element by element), ``"spatial-reduction"``
(sums or means over height and width, taken through ``self.spatial_sum``/``spatial_mean``,
which span the whole map when it is split over ranks), ``"channel-reduction"`` (over
channels at each pixel) or ``Window(kernel, stride, padding, dilation)`` (each output
pixel reads a window of input pixels: the layer reads its input through
``self.window_input`` and returns its gradient through ``self.window_input_grad``, which
add the padding and, under spatial splits, the neighbours' halo). Undeclared layers of
one's own are refused under spatial and channel splits.

The trainer hooks into a layer's passes with ``Module.wrap_pass`` (gradient buckets
launch as a layer's backward ends, the read-ahead starts at one, traces time each one):
a wrapper on that instance only, which a handle takes off again.
"""
import numpy as np

from ..backend import array_module
from . import init

LAYOUTS = ("NCHW", "NHWC")


def convert(x, src, dst):
    """Return 4-D ``x`` (in layout ``src``) in layout ``dst``; other ranks pass through.

    None passes through too: a first layer with ``needs_input_grad = False`` returns
    None from backward.
    """
    if x is None or x.ndim != 4 or src == dst:
        return x
    axes = (0, 2, 3, 1) if dst == "NHWC" else (0, 3, 1, 2)
    return array_module(x).ascontiguousarray(x.transpose(axes))


class Parameter:
    """A trainable array and its gradient (same shape and dtype). A parameter drawn under
    ``init.deferred()`` holds a placeholder and no gradient until ``materialize()``."""

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data):
        self.data = data
        self.grad = None if init.is_deferred(data) else array_module(data).zeros_like(data)
        self.requires_grad = True

    def materialize(self):
        if self.grad is None:
            self.data = init.materialize(self.data)
            self.grad = array_module(self.data).zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Context:
    """What a layer may know about how its tensors are partitioned.

    Layers never talk to MPI; the parallel layer gives them one of these. The
    serial default says: this rank holds samples [sample_offset, +n) of a global
    batch and reduces nothing.
    """

    sample_offset = 0  # global index of this rank's first sample in the current batch
    step = 0  # optimizer step counter, keys the dropout hash
    # True when feature maps are split over height/width (mpicnn.parallel.spatial): window
    # layers then read their input through the context's halo methods instead.
    spatial = False
    # Ranks that each back-propagate a replicated head (the spatial blocks of one sample):
    # each sends 1/grad_seam of the loss gradient, and global pools scale it back up.
    grad_seam = 1

    def allreduce_stats(self, array):
        """Sum ``array`` over the ranks that share a BatchNorm (in place); serial: no-op."""
        return array


SERIAL = Context()


TOUCHES = ("pointwise", "spatial-reduction", "channel-reduction")


class Window:
    """``touches = Window(kernel, stride=1, padding=0, dilation=1, fill=0.0)``: a layer of
    one's own whose output pixel (i, j) reads input rows ``i*stride - padding + a*dilation``
    and columns alike (a < kernel), with ``fill`` outside the map (0 for sums, ``-inf``
    for maxima). Each value is an int or one per spatial axis (2 for
    images, 3 for volumes)."""

    def __init__(self, kernel, stride=1, padding=0, dilation=1, fill=0.0):
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        self.fill = float(fill)
        for name, low in (("kernel", 1), ("stride", 1), ("padding", 0), ("dilation", 1)):
            value = getattr(self, name)
            values = value if isinstance(value, tuple) and len(value) in (2, 3) else (value,)
            if any(not isinstance(v, (int, np.integer)) or v < low for v in values):
                raise ValueError(f"Window {name}={getattr(self, name)!r}: an int >= {low} or a tuple of "
                                 f"2 or 3 of them")

    def geometry(self, axes):
        """(kernel, stride, padding, dilation), each a tuple of ``axes`` ints."""
        def per_axis(name):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                return (int(value),) * axes
            if len(value) != axes:
                raise ValueError(f"{self!r} gives {len(value)} {name} values for an input with {axes} "
                                 f"spatial axes")
            return tuple(int(v) for v in value)
        return tuple(per_axis(name) for name in ("kernel", "stride", "padding", "dilation"))

    def __repr__(self):
        fill = "" if self.fill == 0 else f", fill={self.fill}"
        return (f"Window(kernel={self.kernel}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}{fill})")


def declared(touches):
    """Whether ``touches`` is one of the declarations a layer of one's own may make."""
    return isinstance(touches, Window) or touches in TOUCHES


def _rows_read(size, kernel, stride, padding, dilation):
    """How many rows of the padded input a window op's outputs read along one axis (the
    padding past the last window is not read)."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise ValueError(f"input of {size} is too small for kernel {kernel} with padding {padding} "
                         f"and dilation {dilation}")
    return (out - 1) * stride + (kernel - 1) * dilation + 1


class PassWrap:
    """What ``Module.wrap_pass`` returns: ``remove()`` puts the pass back as it was."""

    def __init__(self, layer, attr, before):
        self.layer, self.attr, self.before = layer, attr, before

    def remove(self):
        if self.before is None:
            vars(self.layer).pop(self.attr, None)  # the class's method shows through again
        else:
            setattr(self.layer, self.attr, self.before)


class Module:
    layout = "NCHW"
    touches = None  # for a user's own layer: one of TOUCHES or a Window (see the module docstring)
    buffer_names = ()  # attributes saved in state_dict that are not Parameters
    training = True
    context = SERIAL

    def __call__(self, x):
        return self.forward(x)

    # Public NCHW interface. NHWC layers get it for free from _forward/_backward.
    def forward(self, x):
        if self.layout == "NCHW":
            raise NotImplementedError(f"{type(self).__name__} must implement forward()")
        return convert(self._forward(convert(x, "NCHW", self.layout)), self.layout, "NCHW")

    def backward(self, dy):
        if self.layout == "NCHW":
            raise NotImplementedError(f"{type(self).__name__} must implement backward()")
        return convert(self._backward(convert(dy, "NCHW", self.layout)), self.layout, "NCHW")

    # Private interface in self.layout, what containers call.
    def _forward(self, x):
        return self.forward(x)

    def _backward(self, dy):
        return self.backward(dy)

    def wrap_pass(self, kind, around):
        """Run this layer's ``kind`` pass ("forward" or "backward") as ``around(inner, x)``
        from now on, where ``inner`` is the pass as it was: on this instance only (an
        instance attribute over the method that containers call), so other layers of the
        class are untouched. Returns a ``PassWrap``; remove wrappers in the reverse order of
        wrapping."""
        attr = {"forward": "_forward", "backward": "_backward"}[kind]
        inner, before = getattr(self, attr), vars(self).get(attr)

        def wrapped(x):
            return around(inner, x)
        setattr(self, attr, wrapped)
        return PassWrap(self, attr, before)

    # Reductions over the whole map, for layers of one's own (touches = "spatial-reduction").
    def spatial_sum(self, x):
        """Sum of the NCHW (or NCDHW) array ``x`` over its spatial axes, (N, C, 1, 1), over
        the whole map even when it is split over ranks."""
        s = x.sum(axis=tuple(range(2, x.ndim)), keepdims=True)
        return self.context.spatial_reduce(s, "sum") if self.context.spatial else s

    def spatial_mean(self, x):
        """Mean of ``x`` over the spatial axes of the whole map, (N, C, 1, 1)."""
        area = np.array([float(np.prod(x.shape[2:]))])
        if self.context.spatial:
            self.context.spatial_reduce(area, "sum")
        return self.spatial_sum(x) / x.dtype.type(area[0])

    # The input of a window of one's own (touches = Window(...)).
    def window_input(self, x):
        """The input rows and columns this layer's output reads: ``x`` (N, C, h, w) or (N, C,
        d, h, w) with the declared ``fill`` padding at the map's edges and, under a spatial
        split, the neighbours' halo. A window op without padding over it gives exactly this
        rank's block of the output. Call ``window_input_grad`` in backward."""
        window = self.touches
        if not isinstance(window, Window):
            raise TypeError(f"{type(self).__name__}.window_input needs touches = nn.Window(...) in the class")
        geometry = window.geometry(x.ndim - 2)
        if self.context.spatial:
            xin, self._window_handle = self.context.user_window_input(self, x, geometry, window.fill)
            return xin
        read = [_rows_read(n, *g) for n, g in zip(x.shape[2:], zip(*geometry))]
        pads = [(0, 0), (0, 0)] + [(p, max(0, r - n - p)) for n, p, r in zip(x.shape[2:], geometry[2], read)]
        xin = array_module(x).pad(x, pads, constant_values=window.fill)
        self._window_handle = (x.shape, geometry[2])
        return xin[(slice(None), slice(None)) + tuple(slice(0, r) for r in read)]

    def window_input_grad(self, dxin):
        """Gradient of ``window_input``'s result -> gradient of its ``x``: padding dropped,
        halo parts sent back to the ranks that own them and added there."""
        handle = getattr(self, "_window_handle", None)
        if handle is None:
            raise RuntimeError(f"{type(self).__name__}.window_input_grad called before window_input")
        self._window_handle = None
        if self.context.spatial:
            return self.context.user_window_input_grad(handle, dxin)
        shape, padding = handle
        xp = array_module(dxin)
        full = xp.zeros(shape[:2] + tuple(n + 2 * p for n, p in zip(shape[2:], padding)), dxin.dtype)
        full[(slice(None), slice(None)) + tuple(slice(0, n) for n in dxin.shape[2:])] = dxin
        return xp.ascontiguousarray(full[(slice(None), slice(None))
                                         + tuple(slice(p, p + n) for n, p in zip(shape[2:], padding))])

    # Tree walking: attributes in definition order, as PyTorch registers them.
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return [m for _, m in self.named_children()]

    def modules(self):
        yield self
        for child in self.children():
            yield from child.modules()

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for name in self.buffer_names:
            yield prefix + name, getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(prefix + name + ".")

    def materialize(self):
        """Give every deferred parameter of this tree its values (``init.deferred``)."""
        for p in self.parameters():
            p.materialize()
        return self

    def forget(self):
        """Drop the recipes of this tree's deferred parameters: they stay placeholders."""
        for p in self.parameters():
            init.forget(p.data)

    def zero_grad(self):
        for p in self.parameters():
            if p.grad is not None:
                p.grad[...] = 0

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def set_context(self, context):
        """Give every layer of this tree the partition context of the run."""
        for m in self.modules():
            m.context = context
        return self

    def state_dict(self):
        """Parameters then buffers, name -> array (the live arrays, not copies)."""
        state = {name: p.data for name, p in self.named_parameters()}
        state.update(self.named_buffers())
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays into this model; shapes must match. Returns the names not found."""
        own = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        missing = [n for n in list(own) + list(buffers) if n not in state]
        unexpected = [n for n in state if n not in own and n not in buffers]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for name, value in state.items():
            target = own[name].data if name in own else buffers.get(name)
            if target is None:
                continue
            value = array_module(target).asarray(value)
            if value.shape != target.shape:
                raise ValueError(f"{name}: shape {value.shape} in state_dict, model has {target.shape}")
            target[...] = value
        return missing

    def extra_repr(self):
        return ""

    def __repr__(self):
        children = [f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(children) + "\n)" if children else ")")
