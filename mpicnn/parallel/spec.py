"""Parse ``--parallel`` specs such as ``data=2,spatial=2x2,channel=1``: pure functions.

The process grid has four axes, sample (data), height, width and channel; their
product must equal the number of ranks. ``data`` may be left out: it then takes the
ranks the other axes leave.
"""
from dataclasses import dataclass

from ..errors import UserError

AXES = ("data", "spatial", "channel")
# Axes whose strategies ship in later releases; parsed so the error can say so.
NOT_YET = {"pipeline": "pipeline parallelism", "ps": "the parameter server"}


@dataclass(frozen=True)
class ParallelSpec:
    data: int = 1
    spatial: tuple = (1, 1)
    channel: int = 1

    @property
    def dims(self):
        """Cartesian grid dimensions in axis order (sample, height, width, channel)."""
        return (self.data, self.spatial[0], self.spatial[1], self.channel)

    @property
    def size(self):
        return self.data * self.spatial[0] * self.spatial[1] * self.channel

    def __str__(self):
        return f"data={self.data},spatial={self.spatial[0]}x{self.spatial[1]},channel={self.channel}"


def _positive_int(text, axis, spec):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"--parallel {spec!r}: {axis} needs a positive integer, got {text!r}")
    return value


def parse_parallel(spec, world_size):
    """Return the ParallelSpec for ``spec`` on ``world_size`` ranks (None: all data)."""
    if spec is None or spec.strip() == "":
        return ParallelSpec(data=world_size)
    fields = {}
    for item in spec.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise UserError(f"--parallel {spec!r}: expected axis=value items like 'data=2', got {item!r}")
        if key in fields:
            raise UserError(f"--parallel {spec!r}: axis {key!r} given twice")
        if key not in AXES and key not in NOT_YET:
            raise UserError(f"--parallel {spec!r}: unknown axis {key!r}; axes are {', '.join(AXES)}")
        fields[key] = value.strip()
    if "spatial" in fields:
        parts = fields["spatial"].lower().split("x")
        if len(parts) != 2:
            raise UserError(f"--parallel {spec!r}: spatial takes PxQ (row blocks x column blocks), "
                            f"got {fields['spatial']!r}")
        spatial = tuple(_positive_int(p, "spatial", spec) for p in parts)
    else:
        spatial = (1, 1)
    channel = _positive_int(fields["channel"], "channel", spec) if "channel" in fields else 1
    for key in ("pipeline", "ps"):
        if key in fields:
            _positive_int(fields[key], key, spec)
    for key, what in NOT_YET.items():
        if key in fields and fields[key] not in ("1", "1x1"):
            raise UserError(f"--parallel {spec!r}: {what} is not available in this version; "
                            f"use data=N, spatial=PxQ and/or channel=C for now")
    others = spatial[0] * spatial[1] * channel
    if "data" in fields:
        data = _positive_int(fields["data"], "data", spec)
    else:
        if world_size % others:
            raise UserError(f"--parallel {spec!r} needs a multiple of {others} ranks, "
                            f"but the job has {world_size}; change -n or the spec")
        data = world_size // others
    result = ParallelSpec(data=data, spatial=spatial, channel=channel)
    if result.size != world_size:
        raise UserError(f"--parallel {spec!r} describes {result.size} ranks ({result}), "
                        f"but the job has {world_size}; run with -n {result.size} or change the spec")
    return result
