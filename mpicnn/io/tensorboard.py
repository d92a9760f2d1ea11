"""``--tensorboard DIR``: TensorBoard scalars of the run, written by the reporting rank.

A metrics sink (it adds itself with ``io.metrics.add_sink``): each metrics record's
numbers become scalars at its step (loss, accuracy, lr, images_per_sec, test_accuracy,
test_loss, under ``train/`` and ``test/``; of the closing summary only the final
evaluation), and, as a ``PhaseClock`` hook, the mean seconds per step of each phase
over every ``every`` steps (``phase/<name>_seconds``). The writer is tensorboardX's
(``pip install 'mpicnn[tensorboard]'``).
"""
from .metrics import add_sink, remove_sink

SCALARS = {"loss": "train/loss", "accuracy": "train/accuracy", "lr": "train/lr",
           "images_per_sec": "train/images_per_sec", "test_accuracy": "test/accuracy", "test_loss": "test/loss"}


def open_writer(directory):
    """tensorboardX's SummaryWriter on ``directory``; ImportError with the fix if missing."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError("--tensorboard needs tensorboardX: pip install 'mpicnn[tensorboard]'") from None
    return SummaryWriter(directory, flush_secs=5)


class TensorBoardSink:
    def __init__(self, directory, every=10):
        self.writer = open_writer(directory)
        self.every = every
        self.sums, self.steps, self.step = {}, set(), None
        self.tested = set()  # steps whose test figures are logged
        add_sink(self)

    def record(self, record):
        step = record.get("step")
        keys = SCALARS
        if record.get("final"):  # the summary: only the final evaluation, if not logged yet
            keys = {} if step in self.tested else {k: SCALARS[k] for k in ("test_accuracy", "test_loss")}
        if record.get("test_accuracy") is not None:
            self.tested.add(step)
        for key, tag in keys.items():
            value = record.get(key)
            if step is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)

    def phase(self, name, step, start, end):
        """PhaseClock hook: per-phase seconds, averaged over ``every`` steps."""
        if step != self.step and self.step is not None and (self.step + 1) % self.every == 0:
            self._flush_phases(self.step + 1)
        self.step = step
        self.steps.add(step)
        self.sums[name] = self.sums.get(name, 0.0) + end - start

    def _flush_phases(self, done):
        for name, seconds in self.sums.items():
            self.writer.add_scalar(f"phase/{name}_seconds", seconds / len(self.steps), done)
        self.sums.clear()
        self.steps.clear()

    def close(self):
        remove_sink(self)
        if self.sums:
            self._flush_phases(self.step + 1)
        self.writer.close()
