"""The README's custom-layer example runs as printed, and its layer is right."""
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example(heading="## Kernels: write your own layer"):
    text = README.read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


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
