"""Which samples each rank computes per micro-batch, and the straggler switch: pure functions."""
import pytest

from mpicnn.errors import UserError
from mpicnn.parallel.batch_plan import pieces, proportional_sizes
from mpicnn.straggler import Straggler, parse_slow_rank


@pytest.mark.parametrize("n, shares", [(10, [1, 1]), (31, [2, 1]), (7, [0.9, 0.05, 0.05]), (100, [3, 1, 1, 5])])
def test_proportional_sizes_sum_and_follow_the_shares(n, shares):
    sizes = proportional_sizes(n, shares)
    assert sum(sizes) == n and min(sizes) >= 1
    total = sum(shares)
    for size, share in zip(sizes, shares):
        # Largest remainder: each size within one (plus the minimum) of its exact share.
        assert abs(size - n * share / total) <= 2


def test_proportional_sizes_reject_impossible_cuts():
    with pytest.raises(ValueError):
        proportional_sizes(2, [1, 1, 1])
    with pytest.raises(ValueError):
        proportional_sizes(5, [0, 0])


@pytest.mark.parametrize("batch, micro, ranks", [(32, 1, 2), (30, 4, 2), (31, 3, 4), (8, 8, 1), (13, 2, 3)])
@pytest.mark.parametrize("shares", [None, "skewed"])
def test_pieces_tile_the_batch_in_micro_batch_order(batch, micro, ranks, shares):
    if shares == "skewed":
        shares = [r + 1.0 for r in range(ranks)]
    per_rank = [pieces(batch, micro, ranks, r, shares) for r in range(ranks)]
    assert all(len(p) == micro for p in per_rank)
    covered = []
    for m in range(micro):
        ranges = [per_rank[r][m] for r in range(ranks)]
        assert all(lo < hi for lo, hi in ranges)  # every rank gets a sample of every micro-batch
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, in rank order
        covered += [i for lo, hi in ranges for i in range(lo, hi)]
    assert covered == list(range(batch))


def test_pieces_follow_the_shares():
    fast, slow = pieces(90, 1, 2, 0, [2.0, 1.0]), pieces(90, 1, 2, 1, [2.0, 1.0])
    assert fast == [(0, 60)] and slow == [(60, 90)]


def test_slow_rank_switch(capsys):
    assert parse_slow_rank("1:2.0") == (1, 2.0)
    assert parse_slow_rank("") is None
    for bad in ("1", "x:2", "1:0.5", "-1:2", "1:two"):
        with pytest.raises(UserError, match="RANK:FACTOR"):
            parse_slow_rank(bad)
    assert Straggler(0, 2, text="1:3").factor == 1.0
    assert Straggler(1, 2, text="1:3").factor == 3.0
    assert Straggler(0, 2, text="1:3").after(0.01) == 0.0
    assert Straggler(0, 2, text="5:2").factor == 1.0
    assert "names rank 5, but the job has 2 rank(s): no rank is slowed" in capsys.readouterr().err


class _LateClock:
    """A clock whose sleeps wake ``late`` seconds after they were asked to."""

    def __init__(self, late):
        self.now, self.late = 0.0, late

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds + self.late


def test_a_straggler_takes_what_it_overslept_off_its_next_sleep(monkeypatch):
    clock = _LateClock(late=0.004)
    monkeypatch.setattr("mpicnn.straggler.time", clock)
    s = Straggler(1, 2, text="1:3")
    slept = [s.after(0.01) for _ in range(20)]
    assert slept[0] == pytest.approx(0.024)  # asked 0.02, woke 4 ms late
    assert slept[1] == pytest.approx(0.020)  # asked 0.016: back on the factor
    assert sum(slept) == pytest.approx(20 * 0.02 + 0.004)  # only the last sleep's lateness stays


def test_a_straggler_is_slowed_against_the_other_ranks_when_it_knows_their_time(monkeypatch):
    """With the others' time for the same work the target is F times theirs, not F times
    its own: a rank on a slower core is not slowed twice."""
    monkeypatch.setattr("mpicnn.straggler.time", _LateClock(late=0.0))
    s = Straggler(1, 2, text="1:2")
    assert s.active and Straggler(0, 2, text="1:2").active and not Straggler(0, 2, text="").active
    assert s.after(0.012, others=0.010) == pytest.approx(0.008)  # 2 x 10 ms in all
    assert s.after(0.025, others=0.010) == 0.0  # already slower than 2x theirs
    assert s.after(0.010) == pytest.approx(0.010)  # not known: twice its own
