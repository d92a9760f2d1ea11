"""Reading a run's files: the per-rank traces of ``--trace DIR`` and the metrics file,
checking that each track's spans nest, and merging the ranks into one trace."""
import glob
import json
import os

from ..errors import UserError
from ..io.trace import RANK_FILE

TOLERANCE_US = 0.01  # times are written rounded to 1 ns


class RankTrace:
    """One rank's trace: ``info`` (distributedInfo), its complete spans by track."""

    def __init__(self, path):
        with open(path) as f:
            document = json.load(f)
        self.path, self.info = path, document.get("distributedInfo", {})
        self.window = document.get("window")  # the run's --trace-steps [A, B)
        self.rank = int(self.info.get("rank", 0))
        self.events = document["traceEvents"]
        names = {e["tid"]: e["args"]["name"] for e in self.events if e.get("ph") == "M" and e["name"] == "thread_name"}
        self.spans = [e for e in self.events if e.get("ph") == "X"]
        for e in self.spans:
            e["track"] = names.get(e["tid"], str(e["tid"]))
            e["end"] = e["ts"] + e["dur"]
        self.spans.sort(key=lambda e: (e["track"], e["ts"], -e["dur"]))

    def track(self, name):
        return [e for e in self.spans if e["track"] == name]

    def steps(self):
        """Step number -> its ProfilerStep span."""
        return {e["args"]["step"]: e for e in self.spans if e["name"].startswith("ProfilerStep#")}


def _rank_of(path):
    """N of a ``rankN.trace.json``; UserError naming any other file, which the trainer never writes."""
    match = RANK_FILE.fullmatch(os.path.basename(path))
    if not match:
        raise UserError(f"{path}: not a trace file of the trainer (those are named rank<N>.trace.json); "
                        f"rename or remove it")
    return int(match.group(1))


def find_inputs(paths):
    """(trace files, metrics file or None) from directories and files on the command line."""
    traces, metrics = [], None
    for path in paths:
        if os.path.isdir(path):
            traces += glob.glob(os.path.join(path, "rank*.trace.json"))
            found = sorted(glob.glob(os.path.join(path, "*.jsonl")))
            metrics = metrics or (found[0] if found else None)
        elif path.endswith(".trace.json"):
            traces.append(path)
        elif os.path.isfile(path):
            metrics = path
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return sorted({os.path.normpath(p) for p in traces}, key=lambda p: (_rank_of(p), p)), metrics


def load_traces(files):
    """The traces by rank; UserError naming a file that is not a readable trace."""
    traces = []
    for path in files:
        try:
            traces.append(RankTrace(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path}: unreadable trace ({type(e).__name__}: {e}); the file is cut off or not "
                            f"a trace: trace the run again with --trace DIR") from None
    return sorted(traces, key=lambda t: t.rank)


def check_run(traces):
    """UserError unless ``traces`` are every rank of one run, each with traced steps: the
    same run id (the trainer writes one since session 7), world size, layout and window,
    ranks 0..world_size-1 once each, and steps that overlap in time (the ranks of one run
    step together; what tells older traces apart)."""
    for t in traces:
        if not isinstance(t.info.get("rank"), int) or not isinstance(t.info.get("world_size"), int):
            raise UserError(f"{t.path}: no rank and world_size in its distributedInfo: not a trace of mpicnn.train")
    def settings(t):
        return {"run_id": t.info.get("run_id"), "world size": t.info["world_size"], "layout": t.info.get("layout"),
                "--trace-steps": t.window}
    first = traces[0]
    for t in traces[1:]:
        for what, theirs in settings(first).items():
            if settings(t)[what] != theirs:
                raise UserError(f"traces of different runs: {first.path} has {what} {theirs}, {t.path} "
                                f"{settings(t)[what]}; give the trace files of one run (remove the stale ones)")
    by_rank = {}
    for t in traces:
        if t.rank in by_rank:
            raise UserError(f"rank {t.rank} twice: {by_rank[t.rank].path} and {t.path}; give the trace files "
                            f"of one run")
        by_rank[t.rank] = t
    size = first.info["world_size"]
    extra = sorted(set(by_rank) - set(range(size)))
    if extra:
        raise UserError(f"{by_rank[extra[0]].path}: rank {extra[0]} of a run of world size {size}: traces of "
                        f"different runs; remove the stale files")
    missing = sorted(set(range(size)) - set(by_rank))
    if missing:
        raise UserError(f"rank(s) {', '.join(map(str, missing))} of {size} missing beside {first.path}: give "
                        f"every rank's trace file (the run's whole --trace directory)")
    for t in traces:
        if not t.steps():
            a, b = t.window or ("A", "B")
            raise UserError(f"{t.path}: no training steps were traced: the run ended before its --trace-steps "
                            f"{a}:{b}; train again with --trace-steps A:B within the run's steps")
    spans = {t.path: (min(e["ts"] for e in t.steps().values()), max(e["end"] for e in t.steps().values()))
             for t in traces}
    lo, hi = spans[first.path]
    for t in traces[1:]:
        a, b = spans[t.path]
        if a > hi or b < lo:
            raise UserError(f"traces of different runs: the steps of {first.path} and {t.path} do not overlap "
                            f"in time; give the trace files of one run (remove the stale ones)")
    for t in traces:
        try:
            check_nesting(t)
        except ValueError as e:
            raise UserError(f"{t.path}: {e}; the trace is damaged: trace the run again") from None


def load_metrics(path):
    """(records, note): a last line cut off (a run killed while writing it) is skipped, and
    the note says so; any other unreadable line is a UserError naming file and line."""
    if not path:
        return [], None
    try:
        with open(path) as f:
            lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the metrics file {path}: {e}") from None
    records, note = [], None
    for n, line in lines:
        try:
            record = json.loads(line)
            problem = None if isinstance(record, dict) else "not an object"
        except ValueError as e:
            problem = str(e)
        if problem is None:
            records.append(record)
        elif n == lines[-1][0]:
            note = f"{path}: skipped its last line ({n}), cut off: the run stopped while writing it"
        else:
            raise UserError(f"{path}, line {n}: not a JSON record ({problem}); give the --metrics file of a run")
    return records, note


def nest(spans):
    """Parent links of one track's spans (sorted by start, longest first): each span's
    innermost enclosing span. Raises ValueError on spans that overlap without nesting."""
    stack, parents = [], []
    for e in spans:
        while stack and stack[-1]["end"] <= e["ts"] + TOLERANCE_US:
            stack.pop()
        if stack and e["end"] > stack[-1]["end"] + TOLERANCE_US:
            p = stack[-1]
            raise ValueError(f"spans overlap without nesting on track {e['track']!r}: {p['name']!r} "
                             f"[{p['ts']}, {p['end']}] and {e['name']!r} [{e['ts']}, {e['end']}]")
        parents.append(stack[-1] if stack else None)
        stack.append(e)
    return parents


def check_nesting(trace):
    """Every track of ``trace`` nests (raises ValueError naming the first overlap)."""
    for name in {e["track"] for e in trace.spans}:
        nest(trace.track(name))


def merge(traces, path):
    """One trace file of every rank (``pid`` = rank), for Perfetto or chrome://tracing."""
    events = []
    for t in traces:
        for e in t.events:
            events.append({k: v for k, v in e.items() if k not in ("track", "end")})
    document = {"traceEvents": events, "displayTimeUnit": "ms",
                "distributedInfo": [t.info for t in traces]}
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(document, f, separators=(",", ":"))
    os.replace(temporary, path)
    return path
