"""JSON-lines metrics, one record per line, written by rank 0 only. Every record carries
``time`` (Unix seconds); a run's first record (``"run": "start"``) holds its config,
versions, world size, layout and start time.

Records also go to every sink in ``SINKS`` (``add_sink``; e.g. ``--tensorboard``'s
writer, attached by ``mpicnn.train`` on the reporting rank): a sink's ``record(dict)``
sees each record as written."""
import json
import os
import time

SINKS = []


def add_sink(sink):
    SINKS.append(sink)


def remove_sink(sink):
    if sink in SINKS:
        SINKS.remove(sink)


def is_metrics_log(path):
    """Whether ``path`` may be written as a metrics log: missing, empty, or one already
    (its first line a JSON object), so that --metrics never replaces another kind of file."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
    except FileNotFoundError:
        return True
    if not first.strip():
        return True
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:  # not UTF-8, not JSON
        return False


class MetricsLog:
    def __init__(self, path, append=False):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # as checkpoints do
        self.file = open(path, "a" if append else "w") if path else None

    def write(self, **record):
        record["time"] = round(time.time(), 3)
        if self.file:
            self.file.write(json.dumps(record, sort_keys=True) + "\n")
            self.file.flush()
        for sink in SINKS:
            sink.record(record)

    def close(self):
        if self.file:
            self.file.close()
            self.file = None
