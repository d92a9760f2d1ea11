"""Parse ``--parallel`` specs such as ``data=2,spatial=2x2,channel=1``: pure functions.

The process grid has six axes, sample (data), depth, height, width, channel and
pipeline stage; their product, plus the parameter-server ranks (``ps=K``), must equal
the number of ranks. ``spatial=PxQ`` splits the height and width of images (and of
volumes); ``spatial=PxQxR`` splits volumes over depth x height x width. ``data`` may be left out: it then takes the ranks the other axes leave.
"""
from dataclasses import dataclass

from ..errors import UserError

AXES = ("data", "spatial", "channel", "pipeline", "ps")


@dataclass(frozen=True)
class ParallelSpec:
    data: int = 1
    spatial: tuple = (1, 1)
    channel: int = 1
    pipeline: int = 1  # stages, each a contiguous run of the model's layers on its own rank
    ps: int = 0  # parameter-server ranks; the other ranks are the workers (data=)
    depth: int = 1  # blocks along the depth of volumes (spatial=PxQxR: P)

    @property
    def dims(self):
        """Cartesian grid dimensions of the training ranks in axis order
        (sample, depth, height, width, channel, stage); parameter servers sit outside the grid."""
        return (self.data, self.depth, self.spatial[0], self.spatial[1], self.channel, self.pipeline)

    @property
    def blocks(self):
        """Spatial blocks of one sample (depth x height x width)."""
        return self.depth * self.spatial[0] * self.spatial[1]

    @property
    def size(self):
        d = self.dims
        return d[0] * d[1] * d[2] * d[3] * d[4] * d[5] + self.ps

    def __str__(self):
        split = "x".join(map(str, ((self.depth,) if self.depth > 1 else ()) + tuple(self.spatial)))
        text = f"data={self.data},spatial={split},channel={self.channel}"
        if self.pipeline > 1:
            text += f",pipeline={self.pipeline}"
        if self.ps:
            text += f",ps={self.ps}"
        return text


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
        if key not in AXES:
            raise UserError(f"--parallel {spec!r}: unknown axis {key!r}; axes are {', '.join(AXES)}")
        fields[key] = value.strip()
    if "spatial" in fields:
        parts = fields["spatial"].lower().split("x")
        if len(parts) not in (2, 3):
            raise UserError(f"--parallel {spec!r}: spatial takes PxQ (row blocks x column blocks) or, "
                            f"for volumes, PxQxR (depth x row x column blocks), got {fields['spatial']!r}")
        blocks = tuple(_positive_int(p, "spatial", spec) for p in parts)
        depth, spatial = (blocks[0], blocks[1:]) if len(blocks) == 3 else (1, blocks)
    else:
        depth, spatial = 1, (1, 1)
    channel = _positive_int(fields["channel"], "channel", spec) if "channel" in fields else 1
    pipeline = _positive_int(fields["pipeline"], "pipeline", spec) if "pipeline" in fields else 1
    ps = _positive_int(fields["ps"], "ps", spec) if "ps" in fields else 0
    model_split = spatial != (1, 1) or depth > 1 or channel > 1
    if pipeline > 1 and model_split:
        raise UserError(f"--parallel {spec!r}: pipeline stages combine with data=N only in this version; "
                        f"drop spatial/channel or the pipeline")
    if ps and (model_split or pipeline > 1):
        raise UserError(f"--parallel {spec!r}: the parameter server (ps=K) serves data-parallel workers "
                        f"only; use ps=K with data=N")
    if ps and ps >= world_size:
        raise UserError(f"--parallel {spec!r}: {ps} server rank(s) leave no worker in a job of "
                        f"{world_size}; run with more ranks or fewer servers")
    others = depth * spatial[0] * spatial[1] * channel * pipeline
    if "data" in fields:
        data = _positive_int(fields["data"], "data", spec)
    else:
        if (world_size - ps) % others:
            raise UserError(f"--parallel {spec!r} needs a multiple of {others} ranks, "
                            f"but the job has {world_size}; change -n or the spec")
        data = (world_size - ps) // others
    result = ParallelSpec(data=data, spatial=spatial, channel=channel, pipeline=pipeline, ps=ps, depth=depth)
    if result.size != world_size:
        raise UserError(f"--parallel {spec!r} describes {result.size} ranks ({result}), "
                        f"but the job has {world_size}; run with -n {result.size} or change the spec")
    return result
