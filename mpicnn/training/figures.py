"""The run's figures and what it tells the user: timed steps (past the warm-up,
``mpicnn.warmup``), the progress bar or plain log lines, metrics records, the decision
on a non-finite step, peak memory and the closing summary. Only the reporting rank (rank 0 of the job)
prints and writes; every rank keeps the same figures.

Console: on a terminal, a progress bar (stderr); in a job log (stderr not a terminal)
or with --no-progress, one flushed line every --log-every steps (step, epoch, loss,
batch accuracy, images/s, elapsed, ETA), never a carriage return. Either way the run's
header comes first and every evaluation prints its test accuracy."""
import datetime
import resource
import sys
import time

from ..errors import UserError
from ..io.metrics import MetricsLog
from ..warmup import warmup_steps


def peak_rss_kb():
    """This process's peak resident memory so far (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def nonfinite_error(step, epoch):
    """The error of a step whose loss or gradients are not finite. Every rank raises it
    together (the flag was summed over ranks), so it is marked agreed."""
    error = UserError(f"the loss or gradients are not finite at step {step} (epoch {epoch}); "
                      "lower --lr, check the data for bad values, or pass --skip-nonfinite")
    error.agreed = True
    return error


class RunFigures:
    def __init__(self, args, reports, start_step, total_steps):
        from tqdm import tqdm  # the bar only; imported where a run starts
        self.args, self.reports = args, reports
        self.start_step, self.total_steps = start_step, total_steps
        self.warmup = warmup_steps(start_step, total_steps)
        self.metrics = MetricsLog(args.metrics if reports else None, append=start_step > 0)
        bar = reports and not args.no_progress and sys.stderr.isatty()
        self.lines = reports and not bar  # plain log lines instead of the bar
        self.progress = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                             disable=not bar, file=sys.stderr, mininterval=0.5)
        self.started = time.perf_counter()
        self.timed = {"images": 0, "steps": 0, "seconds": 0.0, "cpu": 0.0, "data": 0.0, "comm": 0.0}
        self.rate = None  # images/s of the last step, until timed steps exist
        self.skipped = 0
        self.test_accuracy = self.test_loss = self.evaluated_at = None
        self.extras = {}  # regression / segmentation figures of the last evaluation
        self.regression = False  # no batch accuracy to show (the loop sets it from the layout's task)

    def print0(self, *text):
        if self.reports:
            print(*text, flush=True)

    def say(self, line):
        """A line on the console that leaves the bar intact."""
        if self.reports:
            if self.lines:
                print(line, flush=True)
            else:
                self.progress.write(line, file=sys.stdout)

    def header(self, layout_text, world_size):
        """The run's first console line and first metrics record."""
        a = self.args
        self.metrics.write(run="start", start_step=self.start_step, world_size=world_size, layout=layout_text,
                           config=vars(a), versions=versions())
        start = f" from step {self.start_step}" if self.start_step else ""
        self.say(f"mpicnn: {a.model} on {a.dataset}, {layout_text}, {self.total_steps} steps{start}, "
                 f"global batch {a.batch_size}, {a.dtype}")

    def _log_line(self, done, epoch, loss, accuracy, ips):
        elapsed = time.perf_counter() - self.started
        left = elapsed / (done - self.start_step) * (self.total_steps - done) if done > self.start_step else 0.0
        width = len(str(self.total_steps))
        acc = "" if self.regression else f"acc {accuracy:.3f}  "
        self.say(f"step {done:>{width}}/{self.total_steps}  epoch {epoch}  loss {loss:.4f}  {acc}"
                 f"{ips or 0:.0f} images/s  elapsed {_clock(elapsed)}  eta {_clock(left)}")

    def timed_step(self, step, seconds, data_seconds, comm_seconds, cpu_seconds=0.0):
        """Count a finished step of ``seconds`` wall time (``cpu_seconds`` of this
        process's CPU time) in the figures, past the warm-up."""
        B = self.args.batch_size
        self.rate = B / seconds if seconds else None
        if step - self.start_step >= self.warmup:
            t = self.timed
            t["images"] += B
            t["steps"] += 1
            t["seconds"] += seconds
            t["cpu"] += cpu_seconds
            t["data"] += data_seconds
            t["comm"] += comm_seconds

    def cpu_per_step(self):
        """CPU seconds of this process per timed step (0 before any)."""
        return self.timed["cpu"] / self.timed["steps"] if self.timed["steps"] else 0.0

    def images_per_sec(self):
        t = self.timed
        return t["images"] / t["seconds"] if t["seconds"] else self.rate

    def step_done(self, done, epoch, loss_sum, correct, lr, logged=True):
        """The bar moves one step; every --log-every steps (and the last) the global loss and
        batch accuracy go to the bar and the metrics."""
        self.progress.update(1)
        if logged and (done % self.args.log_every == 0 or done == self.total_steps):
            B, ips = self.args.batch_size, self.images_per_sec()
            self.progress.set_postfix(loss=f"{loss_sum / B:.4f}", acc=f"{correct / B:.3f}", img_s=f"{ips or 0:.0f}")
            if self.lines:
                self._log_line(done, epoch, loss_sum / B, correct / B, ips)
            self.metrics.write(step=done, epoch=epoch, loss=loss_sum / B, accuracy=correct / B, lr=lr,
                               images_per_sec=ips)

    def nonfinite(self, step, epoch):
        """A step whose loss or gradients are not finite: skipped with --skip-nonfinite,
        else the run ends with the error (on every rank: the flag was agreed)."""
        if not self.args.skip_nonfinite:
            raise nonfinite_error(step, epoch)
        self.skipped += 1
        self.print0(f"mpicnn: step {step}: non-finite loss or gradients, step skipped")
        self.metrics.write(step=step + 1, epoch=epoch, skipped=True)

    def evaluated(self, done, epoch, accuracy, loss, extras=None, record=True):
        """A test evaluation after ``done`` steps (``record``: one of the run's, not the
        summary's final one). ``extras``: the figures of regression or segmentation."""
        self.test_accuracy, self.test_loss, self.evaluated_at = accuracy, loss, done
        self.extras = dict(extras or {})
        if record:
            self.metrics.write(step=done, epoch=epoch, test_accuracy=accuracy, test_loss=loss, **self.extras)
            self.say(f"step {done}  epoch {epoch}  {self._test_text()}")

    def _test_text(self):
        e = self.extras
        if "test_mse" in e:
            rel = ", ".join(f"{100 * r:.1f}%" for r in e["relative_error"])
            return (f"test MSE {e['test_mse']:.4g} (predicting the training mean: {e['baseline_mse']:.4g})  "
                    f"relative error per target {rel}")
        if "test_mean_iou" in e:
            return (f"test pixel accuracy {100 * e['test_pixel_accuracy']:.2f}%  mean IoU "
                    f"{e['test_mean_iou']:.3f}  test loss {self.test_loss:.4f}")
        return f"test accuracy {100 * self.test_accuracy:.2f}%  test loss {self.test_loss:.4f}"

    def stopped(self, step, signame, where):
        self.print0(f"mpicnn: stopped by {signame} after step {step}; {where}")
        self.metrics.write(step=step, stopped=signame)
        self.metrics.close()
        return {"steps": step, "stopped": signame}

    def summary(self, step, layout_text):
        """The summary figures, printed on the reporting rank."""
        t, secs = self.timed, self.timed["seconds"]
        summary = {"steps": step, "images_per_sec": t["images"] / secs if secs else None,
                   "compute_seconds": secs - t["comm"] - t["data"], "comm_seconds": t["comm"],
                   "data_seconds": t["data"], "test_accuracy": self.test_accuracy, "test_loss": self.test_loss,
                   "skipped_steps": self.skipped, **self.extras}
        a = self.args
        lines = [f"mpicnn: {a.model} on {a.dataset}, {layout_text}, {step} steps, global batch {a.batch_size}, "
                 f"{a.dtype}"]
        if self.test_loss is not None:
            lines.append(self._test_text())
        if secs:
            lines.append(f"{summary['images_per_sec']:.0f} images/s after warm-up; time in compute "
                         f"{_short(summary['compute_seconds'])} s, communication {_short(t['comm'])} s, "
                         f"data {_short(t['data'])} s")
        self.print0("\n".join(lines))
        return summary

    def finished(self, step, summary):
        self.metrics.write(step=step, final=True, **summary)
        self.metrics.close()

    def close_progress(self):
        self.progress.close()


def _clock(seconds):
    return str(datetime.timedelta(seconds=round(seconds)))


def _short(seconds):
    """Seconds with one decimal, or two below one second (a short run's communication)."""
    return f"{seconds:.1f}" if abs(seconds) >= 1 else f"{seconds:.2f}"


def versions():
    """What produced the run, for its metrics file."""
    import numpy
    from .. import __version__, backend
    from ..parallel import collectives
    return {"mpicnn": __version__, "python": sys.version.split()[0], "numpy": numpy.__version__,
            **collectives.versions(), "backend": backend.current()}
