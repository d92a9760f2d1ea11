"""The training loop: one, for every layout (see ``layout.Layout`` for what it asks).

Per step: the layout's step (data, forward, backward, exchange), the optimizer or the
non-finite decision, the step's figures, a stop if one was agreed, evaluation and
checkpoints when due. After the last step: the final checkpoint and --save, the final
evaluation, the summary. Every phase goes through ``layout.clock``.
"""
import gc
import signal
import time

from ..nn.schedule import make_schedule
from ..parallel.collectives import max_value
from .checkpoints import stop_note
from .figures import RunFigures, peak_rss_kb


def fit(layout):
    """Train ``layout`` from its start step to its last; returns the summary dict."""
    args, clock = layout.args, layout.clock
    figures = layout.figures = RunFigures(args, layout.reports, layout.start_step, layout.total_steps)
    figures.regression = getattr(layout, "task", None) == "regression"
    figures.header(layout.layout_text, layout.world.Get_size())
    every = args.checkpoint_every if args.checkpoint_dir else 0
    schedule = make_schedule(args.schedule, args.lr, layout.total_steps, args.warmup, args.step_size, args.gamma)
    stopped = None
    step = layout.start_step
    layout.model.train()
    # Objects made during setup live for the whole run: keep the collector from
    # rescanning them every few steps, a pause that lands on one rank at a time.
    gc.collect()
    gc.freeze()
    for step in range(layout.start_step, layout.total_steps):
        t0, cpu0 = time.perf_counter(), time.process_time()
        clock.start_step(step)
        outcome = layout.step(step)
        if outcome is None:
            break
        epoch = step // layout.steps_per_epoch
        lr = schedule(step)
        if outcome.nonfinite:
            layout.nonfinite(step, epoch)
        else:
            with clock.phase("optimizer"):
                layout.update(lr)
        layout.end_step(step, outcome, lr)
        figures.timed_step(step, time.perf_counter() - t0, outcome.data_seconds, outcome.comm_seconds,
                           time.process_time() - cpu0)
        step += 1
        if outcome.reported:  # else the layout reports the step when its figures arrive
            figures.step_done(step, epoch, outcome.loss_sum, outcome.correct, lr, logged=not outcome.nonfinite)
        if outcome.signum:
            stopped = signal.Signals(outcome.signum).name
            break
        if outcome.halt:
            break
        if layout.evaluation_due(step):
            with clock.phase("evaluation"):
                result = layout.evaluate(step)
            if result is None:
                break
            figures.evaluated(step, epoch, *result, extras=layout.eval_extras)
        if every and step % every == 0:
            with clock.phase("checkpoint"):
                layout.checkpoint(step)
    return _end(layout, *layout.finish(step, stopped))


def _end(layout, step, stopped):
    """After the last step, or a stop: the final checkpoint, --save, the final evaluation
    and the summary (or the stop record)."""
    args, figures = layout.args, layout.figures
    every = args.checkpoint_every if args.checkpoint_dir else 0
    figures.close_progress()
    peak_kb = peak_rss_kb()  # before evaluation, whose batches may be larger
    if stopped:
        if args.checkpoint_dir:
            layout.checkpoint(step)
        return figures.stopped(step, stopped, stop_note(args, step))
    if args.checkpoint_dir and (not every or step % every):
        layout.checkpoint(step)
    if args.save:
        layout.save(args.save, step)
    if layout.test_set is not None and figures.evaluated_at != step:
        figures.evaluated(step, None, *layout.evaluate(step), extras=layout.eval_extras, record=False)
    summary = figures.summary(step, layout.layout_text)
    layout.summary_extras(summary)
    layout.data_figures(summary)
    # Peak resident memory of the training loop, the largest over the job's ranks (MiB).
    summary["peak_rss_mb"] = max_value(layout.world, peak_kb) / 1024
    # CPU seconds of a timed step, the slowest rank's: on a shared machine, the step
    # without the other processes' turns on the cores (bench plan checks the planner on it).
    summary["cpu_seconds_per_step"] = max_value(layout.world, figures.cpu_per_step())
    figures.finished(step, summary)
    return summary
