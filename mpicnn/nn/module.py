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
which span the whole map when it is split over ranks) or ``"channel-reduction"`` (over
channels at each pixel). Undeclared layers of one's own are refused under spatial and
channel splits.
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


class Module:
    layout = "NCHW"
    touches = None  # for a user's own layer: one of TOUCHES (see the module docstring)
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

    # Reductions over the whole map, for layers of one's own (touches = "spatial-reduction").
    def spatial_sum(self, x):
        """Sum of the NCHW array ``x`` over height and width, (N, C, 1, 1), over the whole
        map even when its rows and columns are split over ranks."""
        s = x.sum(axis=(2, 3), keepdims=True)
        return self.context.spatial_reduce(s, "sum") if self.context.spatial else s

    def spatial_mean(self, x):
        """Mean of ``x`` over height and width of the whole map, (N, C, 1, 1)."""
        area = np.array([float(x.shape[2] * x.shape[3])])
        if self.context.spatial:
            self.context.spatial_reduce(area, "sum")
        return self.spatial_sum(x) / x.dtype.type(area[0])

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
