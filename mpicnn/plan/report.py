"""The planner's table and its strong-scaling plot."""


def _bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _ms(s):
    return f"{1e3 * s:.3g}"


def table(problem, ranks, records, top, limit):
    """The ranked table as text, and the recommendation."""
    head = ["layout", "M", "split", "images/s", "step ms", "compute", "comm", "bubble", "other", "memory/rank",
            "bytes/step", "fits"]
    rows = []
    for r in records[:top]:
        rows.append([r["parallel"] + (" (ps: see note)" if r["caveat"] else ""), str(r["micro_batches"]),
                     r["channel_split"] or "-", f"{r['images_per_sec']:.4g}", _ms(r["step_seconds"]),
                     _ms(r["compute_seconds"]), _ms(r["comm_seconds"]), _ms(r["bubble_seconds"]),
                     _ms(r["other_seconds"]), _bytes(r["memory_per_rank_bytes"]), _bytes(r["bytes_per_step"]),
                     "yes" if r["fits"] else "NO"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = [f"mpicnn plan: {problem.label()}, {ranks} ranks"
             + (f", memory per rank {_bytes(limit)}" if limit else "") + f"; {len(records)} layouts "
             f"(showing {min(top, len(records))}); times per step in ms",
             "  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    notes = {r["caveat"] for r in records if r["caveat"]}
    lines += [f"note: {n}" for n in sorted(notes)]
    best = next((r for r in records if r["fits"] and not r["caveat"]), None)
    if best is None:
        lines.append("no layout fits in memory: use more ranks, a smaller batch or more micro-batches")
    else:
        lines.append(f"recommended: mpiexec -n {ranks} python -m mpicnn.train --model {problem.model_name} "
                     f"--dataset {problem.dataset} --batch-size {problem.batch_size} {best['flags']}  "
                     f"(predicted {best['images_per_sec']:.4g} images/s, {_bytes(best['memory_per_rank_bytes'])} "
                     f"per rank)")
    return "\n".join(lines)


def scaling(problem, ranks, machine, limit, step=2):
    """{n: {family: its fastest fitting Prediction}} for n = 1, step, step^2 .. ranks."""
    from . import plan
    out = {}
    n = 1
    while n <= ranks:
        best = {}
        for p in plan(problem, n, machine, limit, ps=False):
            if p.fits and p.layout.family not in best:
                best[p.layout.family] = p
        out[n] = best
        n *= step
    return out


def scaling_table(problem, ranks, machine, limit):
    """Per rank count (1, 4, 16 ..): the best layout, its images/s and memory per rank,
    and the best pure data-parallel layout beside it (or why none fits)."""
    head = ["ranks", "best layout", "images/s", "step ms", "memory/rank", "data-parallel images/s", "best/data"]
    rows = []
    for n, best in scaling(problem, ranks, machine, limit, step=4).items():
        if not best:
            rows.append([str(n), "nothing fits", "-", "-", "-", "-", "-"])
            continue
        top = min(best.values(), key=lambda p: p.step_seconds)
        data = best.get("data")
        ips = top.images_per_sec(problem.batch_size)
        rows.append([str(n), top.layout.flags().replace("--parallel ", ""), f"{ips:.4g}", _ms(top.step_seconds),
                     _bytes(top.memory_bytes), f"{data.images_per_sec(problem.batch_size):.4g}" if data else
                     ("batch < ranks" if n > problem.batch_size else "does not fit"), f"{ips / data.images_per_sec(problem.batch_size):.2f}" if data else "-"])
    lines = [f"mpicnn plan: predicted strong scaling of {problem.label()}"
             + (f", memory per rank {_bytes(limit)}" if limit else ""),
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plot_scaling(problem, ranks, machine, limit, path):
    from ..errors import UserError
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install mpicnn[plot] (or drop --plot)")
    curves = {}
    for n, best in scaling(problem, ranks, machine, limit).items():
        for family, p in best.items():
            curves.setdefault(family, []).append((n, p.images_per_sec(problem.batch_size)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family, points in sorted(curves.items()):
        ax.plot([n for n, _ in points], [v for _, v in points], marker="o", label=family)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("ranks")
    ax.set_ylabel("predicted images/s (fastest fitting layout of the family)")
    ax.set_title(problem.label(), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return curves
