"""Every layout the trainer accepts for N ranks, as ``predict.Layout`` objects: data,
spatial grids, channel splits (each ``--channel-split``), their hybrids, pipelines of S
stages with M in MICRO_BATCHES micro-batches (with data replicas), and the parameter
server (ps=1). Whether a layout can split this model is ``predict``'s question."""
from ..parallel.channel_plan import SPLITS
from ..parallel.spec import ParallelSpec

MICRO_BATCHES = (1, 2, 4, 8, 16)


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def enumerate_layouts(ranks, pipeline=True, ps=True):
    out = []
    for data in divisors(ranks):
        rest = ranks // data
        for p in divisors(rest):
            for q in divisors(rest // p):
                c = rest // p // q
                spec = ParallelSpec(data=data, spatial=(p, q), channel=c)
                for split in (SPLITS if c > 1 else ("auto",)):
                    out.append((spec, 1, split))
    if pipeline:
        for stages in divisors(ranks)[1:]:
            for m in MICRO_BATCHES:
                out.append((ParallelSpec(data=ranks // stages, pipeline=stages), m, "auto"))
    if ps and ranks > 1:
        out.append((ParallelSpec(data=ranks - 1, ps=1), 1, "auto"))
    return out
