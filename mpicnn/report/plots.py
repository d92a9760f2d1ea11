"""The report's PNG plots, drawn with matplotlib (``pip install 'mpicnn[plot]'``).

Each function writes one file and returns its path, or None when the run has nothing
to show for it (no metrics file, no pipeline, no halos)."""
import os

from .analyse import KINDS

PLOTS = ("training", "breakdown", "timeline", "bytes")  # each written as NAME.png

COLORS = {"compute": "#4c72b0", "communication": "#dd8452", "waiting": "#c44e52", "data": "#55a868",
          "idle": "#bbbbbb", "evaluation": "#8172b3", "forward": "#4c72b0", "backward": "#64b5cd",
          "wait": "#c44e52", "comm": "#dd8452", "phase": "#dddddd", "straggler": "#937860"}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend; ImportError with the fix if missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the report's plots need matplotlib: pip install 'mpicnn[plot]' "
                          "(or pass --no-plots)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    fig.clf()
    return path


def training_curves(records, path):
    """Loss, accuracy (and test accuracy), learning rate and images/s over steps."""
    train = [r for r in records if "loss" in r and not r.get("final")]
    tests = [r for r in records if r.get("test_accuracy") is not None and not r.get("final")]
    if not train:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5))
    steps = [r["step"] for r in train]
    for ax, key, title in ((axes[0, 0], "loss", "training loss"), (axes[0, 1], "accuracy", "accuracy"),
                           (axes[1, 0], "lr", "learning rate"), (axes[1, 1], "images_per_sec", "images/s")):
        ax.plot(steps, [r.get(key) or 0.0 for r in train], color=COLORS["compute"], label="train batch")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if tests:
        axes[0, 1].plot([r["step"] for r in tests], [r["test_accuracy"] for r in tests], "o-",
                        color=COLORS["communication"], label="test")
        axes[0, 1].legend()
    return _save(fig, path)


def breakdown_bars(kinds, path):
    """Per rank, a stacked bar of the seconds per step in each kind."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2 + 0.2 * len(kinds)))
    ranks = sorted(kinds)
    left = [0.0] * len(ranks)
    for kind in KINDS:
        widths = [1e3 * kinds[r][kind] for r in ranks]
        ax.barh([f"rank {r}" for r in ranks], widths, left=left, color=COLORS[kind], label=kind)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("milliseconds per step")
    ax.invert_yaxis()
    ax.legend(ncol=3, fontsize=8, loc="lower right")
    ax.set_title("where each rank's step goes")
    return _save(fig, path)


def gantt(traces, path, steps=3):
    """The first ``steps`` traced steps of every rank: phases, layers, waits, messages."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.7 * len(traces)))
    first = min((min(t.steps()) for t in traces if t.steps()), default=None)
    if first is None:
        return None
    keep = set(range(first, first + steps))
    t0 = min(t.steps()[first]["ts"] for t in traces if first in t.steps())
    for row, t in enumerate(traces):
        for e in t.track("compute"):
            if e["args"]["step"] not in keep or e.get("cat") == "step":
                continue
            cat = e.get("cat")
            if cat == "phase" and e["name"] in ("forward", "backward"):
                color, height = COLORS[e["name"]], 0.6
            elif cat in ("wait", "comm"):
                color, height = COLORS[cat], 0.35
            elif cat in ("phase", "straggler"):
                color, height = COLORS[cat], 0.6
            else:
                continue  # layers: inside their phase
            ax.broken_barh([((e["ts"] - t0) / 1e3, e["dur"] / 1e3)], (row - height / 2, height), color=color)
    ax.set_yticks(range(len(traces)), [f"rank {t.rank}" + (f" (stage {t.info['grid']['stage']})"
                                                           if t.info.get("role") == "PipelineStage" else "")
                                       for t in traces])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds (rank 0's clock)")
    kinds = ("forward", "backward", "wait", "comm", "phase", "straggler")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[k]) for k in kinds]
    ax.legend(handles, ["forward", "backward", "wait", "communication", "other phases", "straggler sleep"], ncol=6,
              fontsize=8,
              loc="upper center", bbox_to_anchor=(0.5, -0.35))
    ax.set_title(f"timeline of steps {first}-{first + steps - 1}")
    return _save(fig, path)


def bytes_per_layer(halo, allreduce, path):
    """Halo bytes per step (rank 0) and gradient allreduce bytes per layer."""
    panels = [(title, data) for title, data in (("halo bytes per step (rank 0)", halo and halo[min(halo)]),
                                                ("allreduce bytes per step", allreduce)) if data]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels):
        names = list(data)
        values = [v["bytes_per_step"] if isinstance(v, dict) else v for v in data.values()]
        ax.bar(names, [v / 1024 for v in values], color=COLORS["communication"])
        ax.set_ylabel("KiB")
        ax.set_xlabel("layer")
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=45)
    return _save(fig, path)


def draw_all(analysis, traces, records, directory):
    """Every plot that applies, into ``directory``: {name: path}."""
    os.makedirs(directory, exist_ok=True)
    out = {}
    jobs = [("training", lambda p: training_curves(records, p))]
    if traces:
        jobs += [("breakdown", lambda p: breakdown_bars(analysis["breakdown"], p)),
                 ("timeline", lambda p: gantt(traces, p)),
                 ("bytes", lambda p: bytes_per_layer(analysis["halo"], analysis["allreduce_bytes_per_layer"], p))]
    for name, draw in jobs:
        path = draw(os.path.join(directory, f"{name}.png"))
        if path:
            out[name] = path
    return out
