"""Sequential and Residual: chain children in their own layouts, converting only at seams."""
from .module import Module, convert


class Sequential(Module):
    """Children applied in order; named "0", "1", ... as in PyTorch."""

    layout = "NHWC"

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes Modules, got {layer!r} at position {i}")
            setattr(self, str(i), layer)

    def __len__(self):
        return len(self.children())

    def __getitem__(self, i):
        return self.children()[i]

    def __iter__(self):
        return iter(self.children())

    def _forward(self, x):
        layout = self.layout
        for layer in self.children():
            x = layer._forward(convert(x, layout, layer.layout))
            layout = layer.layout
        return convert(x, layout, self.layout)

    def _backward(self, dy):
        layout = self.layout
        for layer in reversed(self.children()):
            dy = layer._backward(convert(dy, layout, layer.layout))
            layout = layer.layout
        return convert(dy, layout, self.layout)


class Residual(Module):
    """``block(x) + shortcut(x)``; the shortcut is the identity when None."""

    layout = "NHWC"

    def __init__(self, block, shortcut=None):
        self.block = block
        if shortcut is not None:
            self.shortcut = shortcut

    def _branch(self, name):
        return getattr(self, name, None)

    def _forward(self, x):
        y = convert(self.block._forward(convert(x, self.layout, self.block.layout)),
                    self.block.layout, self.layout)
        shortcut = self._branch("shortcut")
        if shortcut is None:
            return y + x
        s = shortcut._forward(convert(x, self.layout, shortcut.layout))
        return y + convert(s, shortcut.layout, self.layout)

    def _backward(self, dy):
        dx = convert(self.block._backward(convert(dy, self.layout, self.block.layout)),
                     self.block.layout, self.layout)
        shortcut = self._branch("shortcut")
        if shortcut is None:
            return dx + dy
        ds = shortcut._backward(convert(dy, self.layout, shortcut.layout))
        return dx + convert(ds, shortcut.layout, self.layout)


def skip_input_gradient(model):
    """Let the layer the images enter first skip its input gradient (nobody uses the
    gradient of the images): the first layer of the model's (nested) Sequentials, if it
    has ``needs_input_grad``. Only that layer: one behind a layer without parameters
    (Flatten, a pool) or inside a Residual must hand its input gradient on. Returns the
    layer, or None."""
    layer = model
    while isinstance(layer, Sequential) and layer.children():
        layer = layer.children()[0]
    if not hasattr(layer, "needs_input_grad"):
        return None
    layer.needs_input_grad = False
    return layer
