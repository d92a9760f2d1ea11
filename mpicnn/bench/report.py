"""Output of every bench: aligned tables on stdout, results as JSON on disk, and the
error of a run it started that failed."""
import json

from ..errors import UserError
from ..io.atomic import atomic_path

ERROR = "mpicnn: error: "


def run_failure(what, stderr):
    """The error for a run the bench started (``what``) that failed: the run's own
    one-line error, as the bench's (a combination of options the trainer refuses), or
    anything else with the tail of its stderr."""
    lines = stderr.strip().splitlines()
    if lines and lines[-1].startswith(ERROR):
        return UserError(f"{lines[-1][len(ERROR):]} (in a run the bench started)")
    return RuntimeError(f"{what} failed:\n{stderr[-3000:]}")


def table(title, rows):
    """Print ``rows`` (dicts; a key some rows lack prints blank there) under ``title``;
    list/dict values (raw samples) go to the JSON only."""
    if not rows:
        return
    keys = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, (list, dict))]
    cells = [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print(f"\n{title}")
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def write_json(path, results):
    """Write ``results`` to ``path`` all at once or not at all (``io.atomic``); missing
    folders are made."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {path}")
