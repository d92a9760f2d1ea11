"""Correctness contract for the channel axis (filter/channel-parallel convs, neuron/row
parallel linear layers, split activations between pairs, sharded optimizer state,
gathered checkpoints): parameters gathered to the global layout equal the 1-rank run
(float64, relative 1e-9). The layout plan itself is a pure function, tested serially."""
import numpy as np
import pytest
from mpi4py import MPI

from mpicnn import models, nn, train
from mpicnn.parallel.channel import estimate_volume, local_block, plan_model, shard_model

WORLD = MPI.COMM_WORLD
BASE = ["--dtype", "float64", "--no-progress", "--eval-batch-size", "1000",
        "--dataset", "shapes:32", "--model", "convnet", "--steps", "4", "--batch-size", "12"]
SPLITS = ["filter", "channel", "auto"]
SGD = ["--optimizer", "sgd", "--momentum", "0.9"]


def chain(in_channels=3, num_classes=10, dtype=np.float64, image_size=None):
    """Convs and Linear layers back to back (pairs hand over split activations), biases
    on the split layers, counts that 2 and 4 do not divide (3 input channels on 4 ranks:
    one rank holds none). The conv before BatchNorm has no bias: its gradient is zero
    up to rounding, which Adam would blow up to full steps."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 5, 3, padding=1, dtype=dtype), nn.ReLU(),
        nn.Conv2d(5, 6, 3, stride=2, padding=1, dtype=dtype), nn.ReLU(),
        nn.Conv2d(6, 7, 3, padding=1, bias=False, dtype=dtype), nn.BatchNorm2d(7, dtype=dtype), nn.ReLU(),
        nn.GlobalAvgPool2d(),
        nn.Linear(7, 9, dtype=dtype), nn.ReLU(), nn.Linear(9, 12, dtype=dtype), nn.ReLU(),
        nn.Linear(12, num_classes, dtype=dtype))


@pytest.fixture
def chain_model(monkeypatch):
    monkeypatch.setitem(models.MODELS, "chain", chain)


# What each model's plan must contain: layout, "<" input arrives split, ">" output left split.
CONVNET_LAYOUTS = {"filter": {"filter", "neuron"}, "channel": {"channel", "neuron"},
                   "auto": {"filter", "channel", "row"}}
CHAIN_LAYOUTS = {"filter": {"filter", "neuron>", "row<", "neuron"},
                 "channel": {"channel>", "channel<>", "channel<", "neuron>", "row<", "neuron"},
                 "auto": {"filter>", "channel<", "filter", "neuron>", "row<>", "row<"}}


def layouts(plans):
    return {p.layout + "<" * p.split_in + ">" * p.split_out for p in plans}


def model_layouts(model):
    return layouts(m.plan for m in model.modules() if hasattr(m, "plan"))


def max_rel_diff(a, b):
    return max(float(np.max(np.abs(a[n] - b[n])) / max(np.max(np.abs(b[n])), 1e-300)) for n in b)


def agreed_max(value):
    """Every rank asserts on the same number, so a failure cannot strand a rank in a collective."""
    return WORLD.allreduce(value, op=MPI.MAX)


def on_ranks(n, fn):
    """Run ``fn(comm)`` on groups of ``n`` ranks (the rest idle); the group's figure, or 0."""
    comm = WORLD.Split(WORLD.Get_rank() // n)
    value = fn(comm) if comm.Get_size() == n else 0.0
    comm.Free()
    return value


_serial = {}


def serial_params(argv):
    """The 1-rank run's parameters (the same for every split and grid: computed once)."""
    if tuple(argv) not in _serial:
        _serial[tuple(argv)] = train.run(argv, MPI.COMM_SELF).params
    return _serial[tuple(argv)]


def compare(spec, split, extra=(), expect=CONVNET_LAYOUTS):
    """The run's difference from serial; infinite when its plan lacks the expected layouts."""
    argv = BASE + list(extra)

    def run(comm):
        serial = serial_params(argv)
        result = train.run(argv + ["--parallel", spec, "--channel-split", split], comm)
        assert set(result.params) == set(serial)
        return max_rel_diff(result.params, serial) if model_layouts(result.model) == expect[split] else np.inf
    return run


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("split", SPLITS)
def test_channel2_equals_serial(split):
    assert agreed_max(on_ranks(2, compare("channel=2", split, SGD))) < 1e-9


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("spec", ["channel=4", "data=2,channel=2", "spatial=2x1,channel=2"])
@pytest.mark.parametrize("split", SPLITS)
def test_four_rank_layouts_equal_serial(spec, split):
    # --sync-bn: BatchNorm statistics over the whole batch, as the serial run has them.
    assert agreed_max(on_ranks(4, compare(spec, split, ["--sync-bn"]))) < 1e-9


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("spec,ranks", [("channel=2", 2),
                                        pytest.param("channel=4", 4, marks=pytest.mark.mpi(min_size=4)),
                                        pytest.param("spatial=2x1,channel=2", 4, marks=pytest.mark.mpi(min_size=4))])
@pytest.mark.parametrize("split", SPLITS)
def test_split_activations_equal_serial(chain_model, spec, ranks, split):
    """Pairs that hand over split activations (for free, or reduce-scattered), row-parallel
    Linear pairs and uneven blocks, against serial."""
    extra = ["--model", "chain", "--sync-bn"]
    assert agreed_max(on_ranks(ranks, compare(spec, split, extra, CHAIN_LAYOUTS))) < 1e-9


@pytest.mark.mpi(min_size=2)
def test_channel_weights_are_sharded():
    """Each rank holds ~1/C of every conv and linear weight, cut along one axis (uneven:
    blocks differ by one); the default (auto) plan cuts some along the input axis."""
    def run(comm):
        full = serial_params(BASE + SGD)  # the global shapes (that run is cached)
        part = train.run(BASE + ["--steps", "1", "--parallel", "channel=2"], comm).model
        worst, axes = 0, set()
        for n, p in part.named_parameters():
            if n.endswith("weight") and p.data.ndim >= 2:
                cut = [a for a, (s, f) in enumerate(zip(p.data.shape, full[n].shape)) if s != f]
                if len(cut) != 1:
                    return np.inf
                axes.add(cut[0])
                worst = max(worst, abs(p.data.shape[cut[0]] - full[n].shape[cut[0]] / 2))
        return worst if axes == {0, 1} else np.inf
    assert agreed_max(on_ranks(2, run)) <= 0.5


@pytest.mark.mpi(min_size=2)
def test_checkpoints_move_between_channel_and_serial(tmp_path_factory):
    """Saved on channel=2 (gathered to the global layout, input-split weights along
    axis 1 too) and resumed on 1 rank, and saved on 1 rank and resumed on channel=2
    (cut): both equal 4 uninterrupted serial steps, Adam state included."""
    def run(comm):
        root = comm.bcast(str(tmp_path_factory.mktemp("ckpt")) if comm.Get_rank() == 0 else None)
        argv = BASE + ["--optimizer", "adam", "--schedule", "constant"]
        serial = serial_params(argv)
        there, back = ["--checkpoint-dir", root + "/there"], ["--checkpoint-dir", root + "/back"]
        train.run(argv + there + ["--steps", "2", "--parallel", "channel=2"], comm)
        if comm.Get_rank() == 0:
            train.run(argv + back + ["--steps", "2"], MPI.COMM_SELF)
        comm.Barrier()
        resumed = train.run(argv + back + ["--resume", "latest", "--parallel", "channel=2"], comm).params
        diff = max_rel_diff(resumed, serial)
        if comm.Get_rank() == 0:
            diff = max(diff, max_rel_diff(train.run(argv + there + ["--resume", "latest"], MPI.COMM_SELF).params,
                                          serial))
        return diff
    assert agreed_max(on_ranks(2, run)) < 1e-9


@pytest.mark.mpi(min_size=2)
def test_emu_channel2_equals_numpy_serial():
    """channel=2 on the emulator backend (the CUDA kernels' code path) equals the serial
    NumPy run in float64; channel counts 3 and 6 of width 3 split unevenly, the auto plan
    splits some convs by filters and some by input channels."""
    argv = ["--dtype", "float64", "--no-progress", "--eval-batch-size", "1000", "--model", "convnet",
            "--width", "3", "--dataset", "shapes:20:64", "--steps", "2", "--batch-size", "6"]

    def run(comm):
        ref = train.run(argv + ["--backend", "numpy"], MPI.COMM_SELF).params
        got = train.run(argv + ["--backend", "emu", "--parallel", "channel=2"], comm).params  # auto: both convs
        return max_rel_diff(got, ref)
    assert agreed_max(on_ranks(2, run)) < 1e-9


# ---- the plan: pure functions, one process --------------------------------------------
def first_layer_without_input_grad(model):
    model[0].needs_input_grad = False  # as the trainer sets it
    return model


def test_volume_estimate():
    """filter: out/s + 2*in; channel: 2*out/s + in; no input gradient: no input term."""
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    assert estimate_volume(conv) == {"filter": 16 / 4 + 2 * 8, "channel": 2 * 16 / 4 + 8}
    conv.needs_input_grad = False
    assert estimate_volume(conv) == {"filter": 4.0, "channel": 8.0}
    assert estimate_volume(nn.Linear(128, 10)) == {"neuron": 10 + 256, "row": 20 + 128}


def test_auto_picks_the_smaller_volume_per_layer():
    """convnet: the first conv (no input gradient) and the stride-1 convs (a tie) split
    filters; the stride-2 convs, which shrink the map, split input channels; so does
    the head (10 outputs from 128 features)."""
    model = first_layer_without_input_grad(models.get("convnet", 3, 10, width=16))
    plan = plan_model(model, "auto")
    assert [p.layout for p in plan.values()] == ["filter", "channel", "filter", "channel", "filter", "channel",
                                                 "filter", "row"]
    assert not any(p.split_in or p.split_out for p in plan.values())  # BatchNorm between every pair
    assert str(plan["3"]).startswith("channel (input whole, output whole; smaller estimated volume")
    assert {p.layout for p in plan_model(model, "filter").values()} == {"filter", "neuron"}
    assert {p.layout for p in plan_model(model, "channel").values()} == {"channel", "neuron"}


def test_pairs_hand_over_split_activations():
    """A layer feeding another of its type through ReLU only hands over its activation
    split: conv pairs under auto, Linear pairs always, and into any input split layer."""
    model = first_layer_without_input_grad(chain())
    for split, expect in CHAIN_LAYOUTS.items():
        assert layouts(plan_model(model, split).values()) == expect
    auto = plan_model(model, "auto")
    assert (auto["0"].layout, auto["2"].layout, auto["4"].layout) == ("filter", "channel", "filter")
    assert (auto["8"].layout, auto["10"].layout, auto["12"].layout) == ("neuron", "row", "row")
    # lenet5: MaxPool between its convs and Flatten before the Linear layers keep activations
    # whole there; its Linear layers hand over split activations: 120 and 84 features.
    lenet = plan_model(first_layer_without_input_grad(models.get("lenet5", 1, 10)), "auto")
    assert [(n, p.layout, p.split_in, p.split_out) for n, p in lenet.items() if p.split_in or p.split_out] == \
        [("7", "neuron", False, True), ("9", "row", True, True), ("11", "row", True, False)]


def test_grouped_convolutions_are_refused():
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2))
    for split in SPLITS:
        with pytest.raises(ValueError, match="grouped convolutions"):
            plan_model(model, split)


def test_shards_cut_and_rejoin_along_their_axis():
    """local_block over every rank gives back the global array, along axis 0 or 1, uneven."""
    class Ranks:  # shard_model needs only the channel ranks' size and index
        def __init__(self, size, rank):
            self.size, self.rank = size, rank
    weights = {n: p.data for n, p in chain().named_parameters()}
    for C in (2, 3, 4):
        shards = shard_model(chain(), Ranks(C, 0), "channel")
        assert shards["2.weight"].axis == 1 and "2.bias" not in shards  # input split: the bias stays whole
        assert shards["8.weight"].axis == 0 and shards["10.weight"].axis == 1  # a neuron + row pair
        for name, shard in shards.items():
            parts = [local_block(weights[name], shard, c) for c in range(C)]
            assert np.array_equal(np.concatenate(parts, axis=shard.axis), weights[name])
            assert max(p.shape[shard.axis] for p in parts) - min(p.shape[shard.axis] for p in parts) <= 1
