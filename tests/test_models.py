"""The model zoo: shapes, parameter counts, names, sizes each model accepts."""
import numpy as np
import pytest

from mpicnn import models, nn


def count(model):
    return sum(p.data.size for p in model.parameters())


@pytest.mark.parametrize("name, size, channels", [("lenet5", 28, 1), ("convnet", 16, 3), ("convnet", 45, 1),
                                                   ("resnet8", 32, 3), ("resnet20", 20, 3), ("vgg11", 28, 1)])
def test_forward_backward_shapes(name, size, channels):
    nn.init.manual_seed(0)
    model = models.get(name, channels, 7, image_size=(size, size), **({"width": 8} if name == "vgg11" else {}))
    x = np.random.default_rng(0).standard_normal((2, channels, size, size)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, 7) and y.dtype == np.float32
    dx = model.backward(np.ones_like(y))
    assert dx.shape == x.shape
    assert all(np.any(p.grad != 0) for p in model.parameters())


def test_parameter_counts_match_the_papers():
    assert count(models.get("lenet5", 1, 10)) == 61706  # LeNet-5 with a padded first conv
    assert count(models.get("resnet20", 3, 10)) == pytest.approx(0.27e6, rel=0.03)  # He et al.: 0.27M
    assert count(models.get("vgg11", 3, 10, width=64)) > 9e6


def test_names_follow_pytorch_and_seed_fixes_weights():
    nn.init.manual_seed(3)
    a = models.get("resnet8", 3, 10)
    nn.init.manual_seed(3)
    b = models.get("resnet8", 3, 10)
    names = [n for n, _ in a.named_parameters()]
    assert names[:2] == ["0.weight", "1.weight"] and "3.block.0.weight" in names and "4.block.0.weight" not in names
    assert any(".shortcut.0.weight" in n for n in names)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)


def test_float64_and_errors():
    model = models.get("convnet", 1, 3, dtype=np.float64, width=4)
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    with pytest.raises(ValueError, match="unknown model 'alexnet'"):
        models.get("alexnet", 3, 10)
    with pytest.raises(ValueError, match="28x28"):
        models.get("lenet5", 1, 10, image_size=(32, 32))
    with pytest.raises(ValueError, match="at least 8 px"):
        models.get("convnet", 1, 10, image_size=(6, 6))


def test_convnet_takes_large_images():
    model = models.get("convnet", 1, 2, width=2, image_size=(300, 200))
    assert model(np.zeros((1, 1, 300, 200), np.float32)).shape == (1, 2)


@pytest.mark.parametrize("name, shape, width, out", [
    ("cosmoflow", (2, 4, 16, 16, 16), 4, (2, 3)), ("cosmoflow", (1, 1, 32, 20, 24), 2, (1, 3)),
    ("unet", (2, 3, 64, 64), 4, (2, 3, 64, 64)), ("unet", (1, 1, 60, 36), 2, (1, 3, 60, 36)),
    ("unet3d", (1, 2, 8, 12, 8), 2, (1, 3, 8, 12, 8))])
def test_volume_and_segmentation_models(name, shape, width, out):
    nn.init.manual_seed(0)
    model = models.get(name, shape[1], 3, dtype=np.float64, image_size=shape[2:], width=width)
    x = np.random.default_rng(0).standard_normal(shape)
    y = model(x)
    assert y.shape == out and y.dtype == np.float64
    assert model.backward(np.ones_like(y)).shape == shape
    assert all(np.any(p.grad != 0) for p in model.parameters())


def test_unet_depth_follows_the_image_and_refuses_odd_sides():
    deep = models.get("unet", 1, 2, image_size=(64, 64), width=2)
    shallow = models.get("unet", 1, 2, image_size=(60, 60), width=2)  # 60 halves twice only
    pools = lambda m: sum(isinstance(x, nn.MaxPool2d) for x in m.modules())  # noqa: E731
    assert (pools(deep), pools(shallow)) == (3, 2)
    assert "6.block.1.weight" in dict(deep.named_parameters())  # the skip (after 2 convs) holds the inner level
    with pytest.raises(ValueError, match="divisible by 8"):
        models.get("unet", 1, 2, image_size=(60, 60), depth=3)
    with pytest.raises(ValueError, match="at least 16 voxels"):
        models.get("cosmoflow", 4, 4, image_size=(8, 8, 8))
