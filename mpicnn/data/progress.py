"""Progress of a long conversion: a tqdm bar on a terminal (stderr, like the trainer's),
plain lines on stdout otherwise (logs, CI): one at every tenth of the work.

    with Progress(total) as p:
        p.update(samples_done_now)
"""
import sys
import time


class Progress:
    def __init__(self, total, unit="samples"):
        self.total, self.unit, self.done = total, unit, 0
        self.started = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm  # the bar only
            self.bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        self.next_tenth = 1

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if self.total and self.done * 10 >= self.next_tenth * self.total:
            print(f"convert: {self.done}/{self.total} {self.unit} ({100 * self.done // self.total}%), "
                  f"{time.perf_counter() - self.started:.1f} s", flush=True)
            self.next_tenth = self.done * 10 // self.total + 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
