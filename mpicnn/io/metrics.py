"""JSON-lines metrics, one record per line, written by rank 0 only."""
import json
import os


class MetricsLog:
    def __init__(self, path, append=False):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # as checkpoints do
        self.file = open(path, "a" if append else "w") if path else None

    def write(self, **record):
        if self.file:
            self.file.write(json.dumps(record, sort_keys=True) + "\n")
            self.file.flush()

    def close(self):
        if self.file:
            self.file.close()
            self.file = None
