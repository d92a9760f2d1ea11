"""``report.html``: one self-contained page (plots embedded as base64 PNG) with the
analyses' tables."""
import base64
import html
import json

CAPTIONS = {"training": "Loss, accuracy, learning rate and images/s over steps (metrics file)",
            "breakdown": "Per-rank time per step, stacked by kind",
            "timeline": "Timeline of the first traced steps (pipeline Gantt under pipeline=S)",
            "bytes": "Halo and gradient allreduce bytes per layer"}


def _cell(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return html.escape(json.dumps(v))
    return html.escape(str(v))


def _table(title, rows, index="rank"):
    """``rows``: {key: {column: value}}."""
    if not rows:
        return ""
    columns = list(next(iter(rows.values())))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [index] + columns)
    body = "".join("<tr>" + f"<td>{_cell(k)}</td>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>"
                   for k, r in rows.items())
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _image(name, path):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return (f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(CAPTIONS.get(name, name))}</figcaption></figure>")


def write_html(path, analysis, plots, title):
    a = analysis
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if a.get("ranks"):
        errors = ", ".join(f"rank {r} {e:.1f} µs" for r, e in a.get("clock_error_us", {}).items() if e is not None)
        steps = next(iter((a.get("window") or {}).values()), [])
        window = f"steps {steps[0]}-{steps[-1]}" if steps else "no steps"
        parts.append(f"<p>Traced: {window}. Clock alignment error to rank 0: {errors}</p>")
    parts += [_image(name, p) for name, p in plots.items()]
    parts.append(_table("Seconds per step", a.get("breakdown")))
    if a.get("straggler"):
        s = a["straggler"]
        parts.append(f"<h2>Straggler</h2><p>rank {s['rank']}, compute {_cell(s['factor'])}x the others' median; "
                     f"last at collectives {s['last_at_collectives']}, late by {_cell(s['late_ms'])} ms</p>")
    elif a.get("straggler_note"):
        parts.append(f"<h2>Straggler</h2><p>{html.escape(a['straggler_note'])}</p>")
    if a.get("allreduce_hidden_fraction") is not None:
        parts.append(f"<h2>Gradient allreduce</h2><p>{100 * a['allreduce_hidden_fraction']:.0f}% of the allreduce "
                     f"time overlaps backward</p>")
    if a.get("pipeline_bubble"):
        b = a["pipeline_bubble"]
        parts.append(_table(f"Pipeline bubble (ideal {b['ideal']:.3f} for {b['stages']} stages x "
                            f"{b['micro_batches']} micro-batches)",
                            {s: {"bubble": v} for s, v in b["per_stage"].items()}, "stage"))
    for rank, layers in (a.get("halo") or {}).items():
        parts.append(_table(f"Halo per layer, rank {rank}", layers, "layer"))
    parts.append(_table("Parameter-server weight age (steps)", a.get("ps_weight_age")))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}")
    document = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    with open(path, "w") as f:
        f.write(document)
    return path
