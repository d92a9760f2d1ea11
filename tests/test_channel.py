"""Correctness contract for the channel axis (filter/channel-parallel convs, neuron/row
parallel linear layers, split activations between pairs, sharded optimizer state,
gathered checkpoints): parameters gathered to the global layout equal the 1-rank run
(float64, relative 1e-9). The layout plan itself is a pure function, tested serially."""
import numpy as np
import pytest
from mpi4py import MPI

from mpicnn import models, nn, train
from mpicnn.io.checkpoint import latest_checkpoint, load_checkpoint
from mpicnn.parallel.channel import local_block, shard_model
from mpicnn.parallel.channel_plan import estimate_volume, plan_model
from contract import BASE as CONTRACT, agreed_max, max_rel_diff, on_ranks, serial_params

BASE = CONTRACT + ["--dataset", "shapes:32", "--model", "convnet", "--steps", "4", "--batch-size", "12"]
SPLITS = ["filter", "channel", "auto"]
SGD = ["--optimizer", "sgd", "--momentum", "0.9"]


def chain(in_channels=3, num_classes=10, dtype=np.float64, image_size=None):
    """Split layers separated by per-channel layers only (ReLU, a padded max pool, a
    BatchNorm, Dropout on a map and on features, a global pool), biases on the split
    layers, counts that 2 and 4 do not divide (3 input channels on 4 ranks: one rank
    holds none). The conv before BatchNorm has no bias: its gradient is zero up to
    rounding, which Adam would blow up to full steps."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 5, 3, padding=1, dtype=dtype), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(5, 6, 3, stride=2, padding=1, dtype=dtype), nn.ReLU(),
        nn.Conv2d(6, 7, 3, padding=1, bias=False, dtype=dtype), nn.BatchNorm2d(7, dtype=dtype), nn.ReLU(),
        nn.Dropout(0.25), nn.GlobalAvgPool2d(),
        nn.Linear(7, 9, dtype=dtype), nn.ReLU(), nn.Dropout(0.25), nn.Linear(9, 12, dtype=dtype), nn.ReLU(),
        nn.Linear(12, num_classes, dtype=dtype))


def dropnet(in_channels=3, num_classes=10, dtype=np.float64, image_size=None):
    """Dropout on a whole map and on features split between a neuron and a row-parallel
    Linear; Flatten of a map keeps the activation whole before the first Linear."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1, bias=False, dtype=dtype), nn.BatchNorm2d(4, dtype=dtype), nn.ReLU(),
        nn.Dropout(0.3), nn.AvgPool2d(4), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 12, dtype=dtype), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, num_classes, dtype=dtype))


@pytest.fixture
def test_models(monkeypatch):
    monkeypatch.setitem(models.MODELS, "chain", chain)
    monkeypatch.setitem(models.MODELS, "dropnet", dropnet)


# What each model's plan must contain: layout, "<" input arrives split, ">" output left split.
CONVNET_LAYOUTS = {"filter": {"filter", "filter>", "row<"}, "channel": {"channel>", "channel<>", "row<"},
                   "auto": {"filter>", "channel<>", "row<"}}
CHAIN_LAYOUTS = {"filter": {"filter", "filter>", "row<>", "row<"},
                 "channel": {"channel>", "channel<>", "row<>", "row<"},
                 "auto": {"filter>", "channel<>", "row<>", "row<"}}
DROPNET_LAYOUTS = {"filter": {"filter", "neuron>", "row<"}, "channel": {"channel", "neuron>", "row<"},
                   "auto": {"filter", "row>", "row<"}}
# Activations are whole at the edges of a residual block; a split crosses its inner ReLU.
RESNET8_LAYOUTS = {"filter": {"filter", "neuron"}, "auto": {"filter", "channel>", "channel<", "channel", "row"}}


def layouts(plans):
    return {p.layout + "<" * p.split_in + ">" * p.split_out for p in plans}


def model_layouts(model):
    return layouts(m.plan for m in model.modules() if hasattr(m, "plan"))


def compare(spec, split, extra=(), expect=CONVNET_LAYOUTS):
    """The run's difference from serial; infinite when its plan lacks the expected layouts."""
    argv = BASE + list(extra)

    def run(comm):
        serial = serial_params(argv)   # the same for every split and grid: computed once
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
def test_split_activations_equal_serial(test_models, spec, ranks, split):
    """Activations split through max pooling (with halos under spatial), BatchNorm,
    Dropout and a global pool, reduce-scattered between channel-parallel convs and
    row-parallel Linear layers, uneven blocks, against serial."""
    extra = ["--model", "chain", "--sync-bn"]
    assert agreed_max(on_ranks(ranks, compare(spec, split, extra, CHAIN_LAYOUTS))) < 1e-9


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("model,split,expect", [("dropnet", split, DROPNET_LAYOUTS) for split in SPLITS]
                         + [("resnet8", split, RESNET8_LAYOUTS) for split in ("filter", "auto")])
def test_other_models_equal_serial(test_models, model, split, expect):
    """Dropout masks of feature blocks and a neuron-parallel Linear handing over its
    output split; residual blocks (whole at their edges, split inside)."""
    assert agreed_max(on_ranks(2, compare("channel=2", split, ["--model", model], expect))) < 1e-9


@pytest.mark.mpi(min_size=2)
def test_channel_weights_are_sharded():
    """Each rank holds ~1/C of every conv and linear weight, cut along one axis (uneven:
    blocks differ by one), some along the input axis; every BatchNorm (all of convnet's
    sit between split layers) holds half of its weight and running statistics."""
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
        params, bn = dict(part.named_parameters()), 0
        for n, b in part.named_buffers():
            if n.endswith(("running_mean", "running_var")):
                prefix, bn = n.rsplit(".", 1)[0], bn + 1
                whole = full[prefix + ".weight"].shape[0]
                worst = max(worst, abs(len(b) - whole / 2), abs(len(params[prefix + ".weight"].data) - whole / 2))
        return worst if axes == {0, 1} and bn == 14 else np.inf  # convnet: 7 BatchNorms
    assert agreed_max(on_ranks(2, run)) <= 0.5


@pytest.mark.mpi(min_size=2)
def test_checkpoints_move_between_channel_and_serial(tmp_path_factory):
    """Saved on channel=2 (gathered to the global layout: input-split weights along axis 1,
    BatchNorm running statistics), resumed on 1 rank (cut), saved there, resumed on
    channel=2 again: parameters and running statistics equal 4 uninterrupted serial
    steps, Adam state included."""
    def run(comm):
        root = comm.bcast(str(tmp_path_factory.mktemp("ckpt")) if comm.Get_rank() == 0 else None)
        argv = BASE + ["--optimizer", "adam", "--schedule", "constant", "--checkpoint-dir", root]
        serial = train.run(BASE + ["--optimizer", "adam", "--schedule", "constant"], MPI.COMM_SELF).model
        train.run(argv + ["--steps", "2", "--parallel", "channel=2"], comm)
        error = None
        if comm.Get_rank() == 0:
            try:
                train.run(argv + ["--steps", "3", "--resume", "latest"], MPI.COMM_SELF)
            except Exception as e:  # (a UserError too): raised below, on every rank, not a hang
                error = e
        if comm.bcast(error is not None):
            raise error or RuntimeError("the 1-rank resume failed on rank 0")
        train.run(argv + ["--resume", "latest", "--parallel", "channel=2"], comm)
        saved = load_checkpoint(latest_checkpoint(root))
        want = {**{n: p.data for n, p in serial.named_parameters()}, **dict(serial.named_buffers())}
        got = {**saved.params, **saved.buffers}
        return max_rel_diff(got, want) if saved.step == 4 and set(got) == set(want) else np.inf
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
    """filter: out/s + 2*in (+ in to gather a split input); channel: 2*out/s + in (no input
    term when the input arrives split); no input gradient: no input gradient term."""
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    assert estimate_volume(conv) == {"filter": 16 / 4 + 2 * 8, "channel": 2 * 16 / 4 + 8}
    assert estimate_volume(conv, split_in=True) == {"filter": 16 / 4 + 3 * 8, "channel": 2 * 16 / 4}
    conv.needs_input_grad = False
    assert estimate_volume(conv) == {"filter": 4.0, "channel": 8.0}
    assert estimate_volume(nn.Linear(128, 10)) == {"neuron": 10 + 256, "row": 20 + 128}


def test_auto_keeps_convnet_split_from_the_first_conv_to_the_logits():
    """convnet: the first conv (no input gradient) splits filters and leaves its output
    split; every later conv takes its input split (channel-parallel, output reduce-scattered
    through BatchNorm and ReLU), and the head takes the global pool's split output."""
    model = first_layer_without_input_grad(models.get("convnet", 3, 10, width=16))
    plan = plan_model(model, "auto")
    assert [(p.layout, p.split_in, p.split_out) for p in plan.values()] == \
        [("filter", False, True)] + [("channel", True, True)] * 6 + [("row", True, False)]
    assert plan["0"].chain == ("1", "2") and plan["18"].chain == ("19", "20", "21")
    assert str(plan["3"]).startswith("channel (input split, output split through 4, 5; smaller estimated volume")
    assert layouts(plan_model(model, "filter").values()) == CONVNET_LAYOUTS["filter"]
    assert layouts(plan_model(model, "channel").values()) == CONVNET_LAYOUTS["channel"]


def test_what_a_split_activation_passes_through():
    """Through per-channel layers (pools, BatchNorm, Dropout, a global pool into a Linear,
    Flatten of its (N, C) output); not through Flatten of a map, nor across the edges of
    a residual block."""
    model = first_layer_without_input_grad(chain())
    for split, expect in CHAIN_LAYOUTS.items():
        assert layouts(plan_model(model, split).values()) == expect
    auto = plan_model(model, "auto")
    assert [auto[n].layout for n in ("0", "3", "5", "10", "13", "15")] == \
        ["filter", "channel", "channel", "row", "row", "row"]
    assert auto["0"].chain == ("1", "2") and auto["5"].chain == ("6", "7", "8", "9")
    flat = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GlobalMaxPool2d(), nn.Flatten(), nn.Linear(4, 2))
    assert plan_model(first_layer_without_input_grad(flat), "filter")["0"].chain == ("1", "2")
    # lenet5: Flatten of a 5x5 map keeps the activation whole before the Linear layers.
    lenet = plan_model(first_layer_without_input_grad(models.get("lenet5", 1, 10)), "filter")
    assert [(n, p.layout, p.split_in, p.split_out) for n, p in lenet.items()] == \
        [("0", "filter", False, False), ("3", "filter", False, False), ("7", "neuron", False, True),
         ("9", "row", True, True), ("11", "row", True, False)]
    resnet = plan_model(first_layer_without_input_grad(models.get("resnet8", 3, 10)), "auto")
    assert not any(p.split_in or p.split_out for n, p in resnet.items() if n.count(".") < 2)
    assert resnet["3.block.0"].chain == ("3.block.1", "3.block.2") and not resnet["3.block.3"].split_out


def test_grouped_convolutions_are_refused():
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2))
    for split in SPLITS:
        with pytest.raises(ValueError, match="grouped convolutions"):
            plan_model(model, split)


def test_shards_cut_and_rejoin_along_their_axis():
    """local_block over every rank gives back the global array, along axis 0 or 1, uneven,
    for weights and for a BatchNorm's parameters and running statistics."""
    class Ranks:  # shard_model needs only the channel ranks' size and index
        def __init__(self, size, rank):
            self.size, self.rank = size, rank
    model = chain()
    weights = {**{n: p.data for n, p in model.named_parameters()}, **dict(model.named_buffers())}
    for C in (2, 3, 4):
        shards = shard_model(chain(), Ranks(C, 0), "channel")
        assert shards["3.weight"].axis == 1 and "3.bias" not in shards  # input split: the bias stays whole
        assert shards["10.weight"].axis == 1 and shards["13.weight"].axis == 1
        assert {n for n in shards if n.startswith("6.")} == {"6.weight", "6.bias", "6.running_mean",
                                                             "6.running_var"}  # BatchNorm: axis 0
        for name, shard in shards.items():
            parts = [local_block(weights[name], shard, c) for c in range(C)]
            assert np.array_equal(np.concatenate(parts, axis=shard.axis), weights[name])
            assert max(p.shape[shard.axis] for p in parts) - min(p.shape[shard.axis] for p in parts) <= 1
