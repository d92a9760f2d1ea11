"""Which layout each split layer of ``--parallel channel=C`` takes: pure functions of
the model, no MPI (``plan_model``; the rules are in ``mpicnn.parallel.channel``'s
docstring). The layouts' builder (``channel.shard_model``) and the planner
(``mpicnn.plan``) both read these plans, so they agree on every layer.
"""
from typing import NamedTuple

import numpy as np

from ..nn.activation import _Elementwise
from ..nn.container import Sequential
from ..nn.conv import Conv2d
from ..nn.conv3d import Conv3d
from ..nn.dropout import Dropout
from ..nn.linear import Linear
from ..nn.norm import BatchNorm2d
from ..nn.norm3d import BatchNorm3d
from ..nn.pool import AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, GlobalRMSPool2d, MaxPool2d
from ..nn.pool3d import AvgPool3d, GlobalAvgPool3d, GlobalMaxPool3d, GlobalRMSPool3d, MaxPool3d
from ..nn.shape import Flatten

SPLITS = ("auto", "filter", "channel")

class Plan(NamedTuple):
    """One split layer: its ``layout`` (filter/channel conv, neuron/row linear), whether
    its input arrives split and its output leaves split, ``chain``: the names of the
    per-channel layers its split output passes through to the next split layer, why,
    and ``volume`` (the estimate of ``estimate_volume`` for both layouts)."""
    layout: str
    split_in: bool
    split_out: bool
    chain: tuple
    why: str
    volume: dict

    def __str__(self):
        est = ", ".join(f"{k} {v:g}" for k, v in self.volume.items())
        out = "split" if self.split_out else "whole"
        if self.chain:
            out += f" through {', '.join(self.chain)}"
        return (f"{self.layout} (input {'split' if self.split_in else 'whole'}, output {out}; "
                f"{self.why}; elements/position: {est})")


CONVS = (Conv2d, Conv3d)
# (output split, input split)
LAYOUTS = {Conv2d: ("filter", "channel"), Conv3d: ("filter", "channel"), Linear: ("neuron", "row")}
COUNTS = {Conv2d: ("in_channels", "out_channels"), Conv3d: ("in_channels", "out_channels"),
          Linear: ("in_features", "out_features")}
# Layers that act on each channel (feature) alone, so they run on a channel block as they
# run on the whole: a split activation passes through them. Volumes: Dropout keys its
# mask on 2-D and 4-D arrays only, so a volume's Dropout keeps the activation whole.
PER_CHANNEL = {Conv2d: (_Elementwise, BatchNorm2d, Dropout, MaxPool2d, AvgPool2d),
               Conv3d: (_Elementwise, BatchNorm3d, MaxPool3d, AvgPool3d),
               Linear: (_Elementwise, Dropout)}
# channels -> (N, C) features
GLOBAL_POOLS = {Conv2d: (GlobalAvgPool2d, GlobalMaxPool2d, GlobalRMSPool2d),
                Conv3d: (GlobalAvgPool3d, GlobalMaxPool3d, GlobalRMSPool3d), Linear: ()}


def estimate_volume(layer, split_in=False):
    """Elements each rank moves per input position (a pixel of one sample; one sample for
    a Linear) in forward + backward, with the output whole:

        output split (filter/neuron):  out/s + 2*in*g  (+ in when split_in)
        input split  (channel/row):  2*out/s + in*g*(not split_in)

    out/in: the layer's output/input channels (features); s = stride_h*stride_w input
    pixels per output pixel (exact for 'same' padding, 1 for a Linear); g = 1 when the
    layer computes its input gradient (0 for the model's first layer); split_in: the
    previous layer can hand over its output split. Ring collectives: an allgather of n
    elements moves n(C-1)/C per rank, an allreduce twice that; the common (C-1)/C is
    left out. Output split allgathers the output and allreduces the partial input
    gradient, and needs its input whole (split_in: the previous layer must gather it).
    Input split allreduces the partial output (or reduce-scatters it and allgathers the
    output gradient when the output is left split: the same volume) and allgathers the
    input gradient unless the input arrived split. So the input split wins when
    out/s < in*g (layers that shrink the map, never the first layer), and nearly always
    when its input can arrive split.
    """
    if type(layer) in CONVS:
        n_in, n_out, s = layer.in_channels, layer.out_channels, int(np.prod(layer.stride))
    else:
        n_in, n_out, s = layer.in_features, layer.out_features, 1
    g = 1 if layer.needs_input_grad else 0
    out_split, in_split = LAYOUTS[type(layer)]
    return {out_split: n_out / s + 2 * n_in * g + n_in * split_in,
            in_split: 2 * n_out / s + n_in * g * (not split_in)}


def _splittable(layer):
    if type(layer) not in LAYOUTS:  # exact types: subclasses (already split layers too) are not
        return False
    if type(layer) in CONVS and layer.groups != 1:
        raise ValueError(f"{layer!r}: grouped convolutions cannot be split over channel ranks; "
                         "use --parallel data=N or spatial=PxQ")
    return True


def _links(a, between, b):
    """Can split layer ``a`` hand its output split to ``b`` through the layers ``between``?
    Only through per-channel layers, conv to conv or Linear to Linear, or conv to Linear
    through one global pool (its (N, C) output, Flatten of it included, is the channels);
    images and volumes alike."""
    pools, per_channel = 0, PER_CHANNEL[type(a)]
    for m in between:
        if isinstance(m, GLOBAL_POOLS[type(a)]):
            pools, per_channel = pools + 1, per_channel + PER_CHANNEL[Linear]  # on (N, C) features
        elif not (isinstance(m, per_channel) or (isinstance(m, Flatten) and pools)):
            return False
    return (type(a), type(b), pools) in {(Conv2d, Conv2d, 0), (Conv3d, Conv3d, 0), (Linear, Linear, 0),
                                         (Conv2d, Linear, 1), (Conv3d, Linear, 1)}


def _plan_run(run, split):
    """Plans of the split layers of ``run`` (name, layer), consecutive siblings in a
    Sequential: only there may a split layer hand over its output split, to the next
    split layer, through per-channel layers only (``_links``)."""
    at = [i for i, (_, m) in enumerate(run) if _splittable(m)]
    plans = {}
    for prev, i in zip([None] + at, at):
        name, m = run[i]
        fed = prev is not None and _links(run[prev][1], [l for _, l in run[prev + 1:i]], m)
        out_split, in_split = LAYOUTS[type(m)]
        volume = estimate_volume(m, fed)
        if split == "auto":  # a tie keeps the activation split
            take_in, why = volume[in_split] <= volume[out_split], "smaller estimated volume"
        elif type(m) in CONVS:
            take_in, why = split == "channel", f"--channel-split {split}"
        else:  # a Linear: whatever the flag, take a split input, or leave the output split
            take_in, why = fed, "input arrives split" if fed else "linear with a whole input"
        plans[name] = Plan(LAYOUTS[type(m)][take_in], fed and take_in, False, (), why, volume)
        if fed and take_in:  # the previous split layer leaves its output split
            plans[run[prev][0]] = plans[run[prev][0]]._replace(
                split_out=True, chain=tuple(n for n, _ in run[prev + 1:i]))
    return plans


def plan_model(model, split="auto"):
    """name -> Plan for every Conv2d, Conv3d and Linear of ``model`` (a pure function; see the
    module doc). Raises ValueError for grouped convolutions or an unknown ``split``."""
    if split not in SPLITS:
        raise ValueError(f"channel split {split!r}: choose one of {', '.join(SPLITS)}")
    plans = {}

    def walk(module, prefix):
        children = [(prefix + name, m) for name, m in module.named_children()]
        # Only a Sequential chains its children; any other container's are separate.
        for run in [children] if isinstance(module, Sequential) else [[c] for c in children]:
            plans.update(_plan_run(run, split))
        for name, m in children:
            if type(m) not in LAYOUTS:
                walk(m, name + ".")

    walk(model, "")
    return plans
