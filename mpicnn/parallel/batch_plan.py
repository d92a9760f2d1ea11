"""Which samples of a global batch each rank computes, and in which micro-batch: pure functions.

A global batch of B samples is cut into M contiguous micro-batches
(``block_range(B, M, m)``), and each micro-batch into contiguous pieces, one per data
rank: balanced blocks, or (``--balance dynamic``) pieces in proportion to each rank's
measured throughput. Every piece's loss is weighted by ``piece / B``, so the summed
gradient is the global-batch mean whatever the cut. The 1-rank run with the same M sees
the same micro-batches, which is what makes BatchNorm (statistics per micro-batch and
per piece, as on 1 rank when D = 1) and every exactness test line up.
"""
from .blocks import block_range


def proportional_sizes(n, shares, minimum=1):
    """Cut ``n`` items into ``len(shares)`` sizes proportional to ``shares`` (largest
    remainder), each at least ``minimum``; the same answer on every rank for the same input."""
    k = len(shares)
    if n < k * minimum:
        raise ValueError(f"cannot give {k} parts at least {minimum} of {n} items")
    total = float(sum(shares))
    if total <= 0:
        raise ValueError(f"shares must have a positive sum, got {shares!r}")
    spare = n - k * minimum
    exact = [spare * s / total for s in shares]
    sizes = [int(e) for e in exact]
    # Hand out what rounding down left, largest fractional part first (ties: lower index).
    order = sorted(range(k), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[:spare - sum(sizes)]:
        sizes[i] += 1
    return [s + minimum for s in sizes]


def pieces(batch_size, micro_batches, data_ranks, rank, shares=None):
    """``[(lo, hi), ...]``: this rank's positions in the global batch, one range per
    micro-batch, in micro-batch order. ``shares``: relative speed of each data rank
    (None: balanced blocks)."""
    out = []
    for m in range(micro_batches):
        mlo, mhi = block_range(batch_size, micro_batches, m)
        if shares is None:
            lo, hi = block_range(mhi - mlo, data_ranks, rank)
        else:
            sizes = proportional_sizes(mhi - mlo, shares)
            lo = sum(sizes[:rank])
            hi = lo + sizes[rank]
        out.append((mlo + lo, mlo + hi))
    return out
