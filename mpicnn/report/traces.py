"""Reading a run's files: the per-rank traces of ``--trace DIR`` and the metrics file,
checking that each track's spans nest, and merging the ranks into one trace."""
import glob
import json
import os
import re

TOLERANCE_US = 0.01  # times are written rounded to 1 ns


class RankTrace:
    """One rank's trace: ``info`` (distributedInfo), its complete spans by track."""

    def __init__(self, path):
        with open(path) as f:
            document = json.load(f)
        self.path, self.info = path, document.get("distributedInfo", {})
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
    key = lambda p: int(re.search(r"rank(\d+)", os.path.basename(p)).group(1))  # noqa: E731
    return sorted(set(traces), key=key), metrics


def load_traces(files):
    return sorted((RankTrace(f) for f in files), key=lambda t: t.rank)


def load_metrics(path):
    if not path:
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
