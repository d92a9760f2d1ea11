"""Balanced block partitions: pure functions, no MPI, tested for every index."""


def block_range(n, parts, index):
    """Half-open range ``[lo, hi)`` of block ``index`` when ``n`` items are cut into
    ``parts`` contiguous blocks whose sizes differ by at most one (the first
    ``n % parts`` blocks get the extra item)."""
    if parts < 1 or not 0 <= index < parts:
        raise ValueError(f"block index {index!r} out of range for {parts!r} parts")
    base, extra = divmod(n, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


def block_sizes(n, parts):
    return [hi - lo for lo, hi in (block_range(n, parts, i) for i in range(parts))]
