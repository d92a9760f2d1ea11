"""Where to cut a layer sequence into pipeline stages: pure functions.

A pipeline runs at the pace of its slowest stage, so the cut minimises the largest
stage time (the classic linear-partition problem, solved exactly by dynamic
programming over prefixes). Measured times are noisy: cuts whose slowest stage is
within ``tolerance`` of the optimum count as ties, and among them the one whose
largest stage memory is smallest wins.
"""


def _min_max(cost, n, stages, allowed):
    """Cut items 0..n-1 into ``stages`` contiguous non-empty runs minimising the largest
    ``cost(lo, hi)`` over runs, using only runs with ``allowed(lo, hi)``. Returns
    (value, [(lo, hi), ...]), or (inf, None) when no cut is allowed."""
    inf = float("inf")
    # best[k][j]: the smallest largest cost of cutting items [0, j) into k runs;
    # start[k][j]: where the last of those runs begins.
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    start = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for j in range(k, n - (stages - k) + 1):
            for i in range(k - 1, j):
                if best[k - 1][i] == inf or not allowed(i, j):
                    continue
                value = max(best[k - 1][i], cost(i, j))
                if value < best[k][j]:
                    best[k][j], start[k][j] = value, i
    if best[stages][n] == inf:
        return inf, None
    runs, j = [], n
    for k in range(stages, 0, -1):
        i = start[k][j]
        runs.append((i, j))
        j = i
    return best[stages][n], runs[::-1]


def partition(times, memory, stages, tolerance=0.05):
    """``[(lo, hi), ...]``: ``stages`` contiguous runs of the layers whose per-layer
    ``times`` and ``memory`` are given, minimising the slowest run's total time; among
    cuts within ``tolerance`` (relative) of that optimum, the smallest largest memory."""
    n = len(times)
    if not 1 <= stages <= n:
        raise ValueError(f"cannot cut {n} layers into {stages} non-empty stages")
    if len(memory) != n:
        raise ValueError(f"{n} layer times but {len(memory)} memory figures")
    t, m = [0.0], [0.0]
    for a, b in zip(times, memory):
        t.append(t[-1] + a)
        m.append(m[-1] + b)

    def time_of(i, j):
        return t[j] - t[i]

    fastest, _ = _min_max(time_of, n, stages, lambda i, j: True)
    bound = fastest * (1.0 + tolerance)  # the fastest cut itself always qualifies
    _, runs = _min_max(lambda i, j: m[j] - m[i], n, stages, lambda i, j: time_of(i, j) <= bound)
    return runs
