"""Block partitions and --parallel specs: pure functions, checked for every index."""
import pytest

from mpicnn.errors import UserError
from mpicnn.parallel.blocks import block_range, block_sizes
from mpicnn.parallel.spec import ParallelSpec, parse_parallel


@pytest.mark.parametrize("n", [0, 1, 7, 30, 31, 64, 1000])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7])
def test_blocks_tile_and_balance(n, parts):
    ranges = [block_range(n, parts, i) for i in range(parts)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = block_sizes(n, parts)
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n


def test_block_index_checked():
    with pytest.raises(ValueError):
        block_range(10, 2, 2)


def test_parse_defaults_and_forms():
    assert parse_parallel(None, 4) == ParallelSpec(data=4)
    assert parse_parallel("data=2", 2).dims == (2, 1, 1, 1, 1, 1)
    assert parse_parallel("data=1,spatial=1x1,channel=1", 1).size == 1
    assert parse_parallel("spatial=2x1", 2).dims == (1, 1, 2, 1, 1, 1)
    assert parse_parallel("data=2,spatial=1x2", 4).dims == (2, 1, 1, 2, 1, 1)
    assert parse_parallel("spatial=2x2", 8).dims == (2, 1, 2, 2, 1, 1)  # data takes the rest
    assert parse_parallel("channel=2", 4).dims == (2, 1, 1, 1, 2, 1)
    assert parse_parallel("pipeline=2", 4).dims == (2, 1, 1, 1, 1, 2)
    # volumes: spatial=PxQxR splits depth x height x width
    spec = parse_parallel("data=2,spatial=2x1x3", 12)
    assert (spec.dims, spec.blocks, str(spec)) == ((2, 2, 1, 3, 1, 1), 6, "data=2,spatial=2x1x3,channel=1")
    assert str(parse_parallel("spatial=1x2", 2)) == "data=1,spatial=1x2,channel=1"
    assert parse_parallel("data=2,pipeline=2", 4).size == 4
    ps = parse_parallel("ps=1", 3)  # the servers sit outside the grid; the rest are workers
    assert (ps.data, ps.ps, ps.size, ps.dims) == (2, 1, 3, (2, 1, 1, 1, 1, 1))


@pytest.mark.parametrize("spec, world, words", [
    ("data=3", 2, ["3 ranks", "job has 2", "-n 3"]),
    ("data=two", 2, ["positive integer", "'two'"]),
    ("gpus=2", 2, ["unknown axis", "'gpus'"]),
    ("data", 2, ["axis=value"]),
    ("data=1,data=2", 2, ["twice"]),
    ("spatial=2", 2, ["PxQ"]),
    ("channel=3", 2, ["multiple of 3 ranks", "job has 2"]),
    ("spatial=2x2", 2, ["4 ranks", "job has 2"]),
    ("pipeline=3", 2, ["multiple of 3 ranks", "job has 2"]),
    ("pipeline=2,channel=2", 4, ["pipeline", "data=N only"]),
    ("ps=1,spatial=2x1", 3, ["ps=K with data=N"]),
    ("ps=2", 2, ["leave no worker"]),
    ("ps=1,data=2", 4, ["3 ranks", "job has 4"]),
])
def test_bad_specs_say_what_and_how(spec, world, words):
    with pytest.raises(UserError) as e:
        parse_parallel(spec, world)
    for w in words:
        assert w in str(e.value)
