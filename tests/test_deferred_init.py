"""Deferred initialisation: a pipeline stage builds the whole model as placeholders and
gives memory only to its own layers, with the numbers a 1-rank build draws."""
import numpy as np
import pytest

from contract import agreed_max, on_ranks
from mpicnn import models, nn, train
from mpicnn.nn import init
from mpicnn.nn.module import Parameter


@pytest.fixture(autouse=True)
def no_recipes_left():
    init._recipes.clear()
    yield
    init._recipes.clear()


def drawn(model):
    """The parameters drawn at random (conv and linear): the ones init defers. BatchNorm's
    ones and zeros are made directly."""
    return [p for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters()]


@pytest.mark.parametrize("name", ["lenet5", "convnet", "resnet8", "vgg11"])
def test_deferred_build_materializes_the_same_numbers(name):
    size = (28, 28) if name == "lenet5" else (32, 32)
    init.manual_seed(7)
    eager = models.get(name, 3, 10, dtype=np.float64, image_size=size)
    after_eager = init.get_rng().uniform()
    init.manual_seed(7)
    with init.deferred():
        lazy = models.get(name, 3, 10, dtype=np.float64, image_size=size)
    assert init.get_rng().uniform() == after_eager  # the generator is where a full build leaves it
    assert drawn(lazy) and all(p.grad is None and not any(p.data.strides) for p in drawn(lazy))
    lazy.materialize()
    for (n, a), (_, b) in zip(eager.named_parameters(), lazy.named_parameters()):
        assert b.data.flags.writeable and np.array_equal(a.data, b.data), n
        assert b.grad.shape == b.data.shape
    assert init._recipes == {}


def test_forget_drops_recipes():
    init.manual_seed(0)
    with init.deferred():
        model = models.get("lenet5", 1, 10, dtype=np.float32)
    assert init._recipes
    model.forget()
    assert init._recipes == {}


@pytest.mark.mpi(min_size=2)
def test_pipeline_stage_materializes_only_its_layers(monkeypatch):
    materialized = []
    real = Parameter.materialize

    def counting(p):
        if p.grad is None:
            materialized.append(p.data.shape)
        real(p)
    monkeypatch.setattr(Parameter, "materialize", counting)

    def wrong(comm):
        materialized.clear()
        result = train.run(["--model", "vgg11", "--dataset", "shapes:32:64", "--width", "8", "--steps", "1",
                            "--batch-size", "8", "--micro-batches", "2", "--parallel", "pipeline=2",
                            "--no-progress"], comm)
        held = sorted(p.data.shape for p in drawn(result.model))
        whole = sum(1 for _ in models.get("vgg11", 3, 4, width=8, image_size=(32, 32)).parameters())
        return float(sorted(materialized) != held or len(held) >= whole or bool(init._recipes))
    assert agreed_max(on_ranks(2, wrong)) == 0
