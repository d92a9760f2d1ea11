"""The README's custom-layer example runs as printed, and its layer is right."""
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example(heading="## Kernels: write your own layer", nth=0):
    text = README.read_text()
    section = text[text.index(heading):]
    return re.findall(r"```python\n(.*?)```", section, re.S)[nth]


def test_python_api_example_from_readme():
    scope = {}
    exec(compile(readme_example("## Python API"), "README.md", "exec"), scope)
    assert np.isfinite(scope["loss"]) and scope["logits"].shape == (8, 10)


def test_custom_kernel_layer_from_readme():
    scope = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)
    swish = scope["Swish"]()
    x = np.random.default_rng(1).standard_normal((3, 2, 5, 7)).astype(np.float32)
    y = swish.forward(x)
    np.testing.assert_allclose(y, x / (1 + np.exp(-x)), rtol=1e-6, atol=1e-7)
    dy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    dx = swish.backward(dy)
    x64, eps = x.astype(np.float64), 1e-6
    f = lambda v: v / (1 + np.exp(-v))  # noqa: E731
    numeric = (f(x64 + eps) - f(x64 - eps)) / (2 * eps) * dy
    np.testing.assert_allclose(dx, numeric, rtol=1e-4, atol=1e-5)
    model = scope["model"]
    assert all(np.any(p.grad != 0) for p in model.parameters())  # gradients flowed through Swish


def test_window_layer_from_readme():
    """The README's blur of one's own equals the built-in 3x3 average pool (zero padding)."""
    from mpicnn import nn
    scope = {"np": np, "nn": nn}
    exec(compile(readme_example("### Your own layers and models", nth=1), "README.md", "exec"), scope)
    blur, pool = scope["BoxBlur"](), nn.AvgPool2d(3, stride=1, padding=1)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 5))
    np.testing.assert_allclose(blur.forward(x), pool.forward(x), rtol=0, atol=1e-12)
    dy = np.random.default_rng(2).standard_normal(x.shape)
    np.testing.assert_allclose(blur.backward(dy), pool.backward(dy), rtol=0, atol=1e-12)
