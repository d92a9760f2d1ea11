"""What the training loop asks of a layout, and what a step tells it back.

A layout is this rank's role in the job: a rank of the data/spatial/channel grid
(``GridLayout``), a pipeline stage (``PipelineStage``), a parameter-server worker or
server (``PSWorker``, ``PSServer``). The loop (``loop.fit``) owns the order of things;
a layout owns how its step computes, how gradients travel, and how evaluation and
checkpoints gather its state. Layouts inherit only these defaults, never each other.
"""
from dataclasses import dataclass


@dataclass
class Outcome:
    """A step's figures, the same on every rank that acts on them."""
    loss_sum: float = 0.0  # sum of the per-sample losses of the global batch
    correct: float = 0.0  # correctly classified samples of the global batch
    nonfinite: bool = False  # the loss or a gradient was NaN/Inf somewhere
    signum: int = 0  # a stop signal every rank agreed on, or 0
    halt: bool = False  # the run ends after this step for another reason (a server's error)
    reported: bool = True  # loss/correct are known now (a ps worker learns them later)
    data_seconds: float = 0.0  # waited for this rank's batch
    comm_seconds: float = 0.0  # spent in communication the layout can tell apart


class Layout:
    """The interface, with the defaults most layouts keep.

    Attributes the loop reads: ``args``, ``model``, ``clock`` (PhaseClock),
    ``start_step``, ``total_steps``, ``steps_per_epoch``, ``test_set`` (or None),
    ``world`` (the communicator of every rank of the job), ``reports`` (whether this
    rank prints and writes metrics) and ``layout_text`` (for the summary line). The
    loop gives the layout ``figures`` (RunFigures) when the run starts.
    """

    def step(self, step):
        """Run training step ``step`` up to the optimizer (phases data, forward, backward,
        exchange). Returns its Outcome, or None if the run ended before it."""
        raise NotImplementedError

    def update(self, lr):
        """Apply the optimizer at learning rate ``lr`` (phase optimizer)."""
        self.optimizer.lr = lr
        self.optimizer.step()

    def nonfinite(self, step, epoch):
        """The step's figures are not finite: skip it or end the run."""
        self.figures.nonfinite(step, epoch)

    def end_step(self, step, outcome, lr):
        """After the update: clear gradients (and whatever else the layout does per step)."""
        self.optimizer.zero_grad()

    def evaluation_due(self, done):
        """Evaluate after ``done`` steps: every --eval-every steps, else at each epoch's end."""
        every = self.args.eval_every or self.steps_per_epoch
        return self.test_set is not None and done % every == 0

    # The figures of the last evaluation beyond accuracy and loss (regression: test_mse,
    # baseline_mse, relative_error; segmentation: test_pixel_accuracy, test_mean_iou).
    eval_extras = None

    def evaluate(self, done, dataset=None):
        """(accuracy, loss) of the model after ``done`` steps on ``dataset`` (default: the
        test set), on every rank, or None if the run ended meanwhile (and ``eval_extras``
        set for other tasks)."""
        raise NotImplementedError

    def checkpoint(self, step):
        """Write ``ckpt-step.h5`` (collective over the ranks holding the state)."""
        raise NotImplementedError

    def save(self, path, step):
        """Write the final model to --save (same format as a checkpoint)."""
        raise NotImplementedError

    def finish(self, step, stopped):
        """After the last step (or a stop): settle in-flight traffic. Returns the final
        (step, stop signal name or None)."""
        return step, stopped

    def summary_extras(self, summary):
        """Add the layout's own figures to the summary (may print; collective)."""

    def data_figures(self, summary):
        """Add what the run read from its data files to the summary (collective)."""

    def global_parameters(self):
        """name -> parameter in the global layout, on every rank (collective)."""
        return self.state.global_parameters()

    def close(self):
        """Free communicators and files."""
