"""``--trace DIR``: this rank's Chrome/Perfetto trace of a window of training steps.

``Tracer.attach(layout)`` hooks the run without touching the loop: the layout's
``PhaseClock`` (each phase's span, and step starts through ``start_step``), the leaf
layers' passes (per-layer spans, ``Module.wrap_pass`` only while the window is
open, so other steps pay nothing), the straggler switch's sleep, and
``mpicnn.parallel.events`` (communication: buckets, halos, channel collectives,
pipeline messages, parameter-server pushes and pulls).

Events stay in memory as tuples; the file ``DIR/rank{R}.trace.json`` is written once,
when the window closes (the first step past it, or the loop's end: the last step, a
stop, a preemption), to a
temporary file renamed into place. Times are ``time.perf_counter`` seconds moved onto
rank 0's clock (``parallel.clock_sync``), written in microseconds.

Tracks (``tid``): 0 "compute" holds ``ProfilerStep#N`` around each step and, nested in
it, the phases, the layers, waits (``cat`` "wait") and blocking communication (``cat``
"comm"); traffic in flight beside the compute (each gradient bucket's allreduce from
launch to completion, halo exchanges) has its own tracks, so every track nests.
"""
import glob
import json
import os
import re
import time

from ..parallel import events



DEFAULT_WINDOW = "10:20"  # --trace-steps when not given
RANK_FILE = re.compile(r"rank(\d+)\.trace\.json")  # each rank's file, rank{R}.trace.json


def parse_window(text):
    """``"A:B"`` -> (A, B): steps A <= step < B. Raises ValueError with the fix."""
    first, sep, last = text.partition(":")
    try:
        a, b = int(first), int(last)
    except ValueError:
        sep = ""
    if not sep or a < 0 or b <= a:
        raise ValueError(f"--trace-steps {text!r}: write FIRST:END with 0 <= FIRST < END, e.g. 10:20")
    return a, b


def leaf_layers(model):
    """(dotted name, module) of every module without children."""
    out = []

    def walk(module, prefix):
        for name, child in module.named_children():
            if child.children():
                walk(child, prefix + name + ".")
            else:
                out.append((prefix + name, child))
    walk(model, "")
    return out


def remove_stale(directory, world_size):
    """Remove ``rank{R}.trace.json`` files of an earlier, larger run from ``directory``
    (R >= ``world_size``): this run writes ranks below it, and the report would otherwise
    read the earlier run's ranks as this one's."""
    for path in glob.glob(os.path.join(glob.escape(directory), "rank*.trace.json")):
        found = RANK_FILE.fullmatch(os.path.basename(path))
        if found and int(found.group(1)) >= world_size:
            os.remove(path)


class Tracer:
    def __init__(self, directory, rank, world_size, window, offset=0.0, error=0.0, run_id=None):
        """``run_id``: the same string on every rank of the run (in ``distributedInfo``:
        the report refuses to merge traces of different runs)."""
        self.path = os.path.join(directory, f"rank{rank}.trace.json")
        self.directory, self.rank, self.window = directory, rank, window
        self.info = {"rank": rank, "world_size": world_size, "backend": "mpi",
                     "clock_offset_us": 1e6 * offset, "clock_error_us": 1e6 * error}
        if run_id is not None:
            self.info["run_id"] = run_id
        self.offset = offset
        self.events = []  # (track, name, cat, start, end, step, args or None)
        self.starts = {}  # step -> perf_counter at its start
        self.step_args = {}  # step -> args of its ProfilerStep span
        self.layer = None  # running leaf layer (for events' call sites)
        self.layout = None
        self.active = self.written = False
        self._wrapped = []  # PassWrap handles of the per-layer spans, in wrapping order

    # ---- attaching ---------------------------------------------------------------------
    def attach(self, layout):
        self.layout = layout
        clock = layout.clock
        grid = getattr(layout, "grid", None)
        self.info["layout"] = getattr(layout, "layout_text", "")
        if grid is not None and getattr(grid, "coords", None) is not None:
            self.info["grid"] = grid.coordinates()
        self.info["role"] = type(layout).__name__
        # What each leaf layer's gradients add to an allreduce (the report's bytes per layer).
        self.info["layers"] = [{"name": name, "type": type(layer).__name__, "parameter_bytes": int(sum(
            v.data.nbytes for v in vars(layer).values() if getattr(v, "requires_grad", False)))}
            for name, layer in leaf_layers(layout.model)]
        start_step = clock.start_step

        def traced_start_step(step):
            self._step_starts(step)
            start_step(step)
        clock.start_step = traced_start_step  # this clock only
        finish = layout.finish

        def traced_finish(step, stopped):  # the loop has ended: close the window
            self._end_window()
            return finish(step, stopped)
        layout.finish = traced_finish
        clock.hooks.append(self.phase)
        straggler = getattr(layout, "straggler", None)
        if straggler is not None and straggler.factor > 1.0:
            after = straggler.after

            def traced_after(seconds, others=None):
                t0 = time.perf_counter()
                extra = after(seconds, others)
                if self.active:
                    self.span("compute", "straggler sleep", t0, time.perf_counter(), "straggler",
                              factor=straggler.factor)
                return extra
            straggler.after = traced_after
        return self

    def _step_starts(self, step):
        a, b = self.window
        now = time.perf_counter()
        if self.active and step >= b:
            self._end_window(now)
        elif not self.active and not self.written and a <= step < b:
            self._open()
        if self.active:
            self.starts[step] = now

    def _end_window(self, now=None):
        if self.active:
            self.starts["end"] = now or time.perf_counter()
            self.close()

    def _open(self):
        self.active = True
        events.recorder = self
        for name, layer in leaf_layers(self.layout.model):
            for kind in ("forward", "backward"):
                self._wrapped.append(layer.wrap_pass(kind, self._traced(layer, name, kind)))

    def _traced(self, layer, name, kind):
        label, typename = f"{kind} {name}", type(layer).__name__
        clock, events, now = self.layout.clock, self.events, time.perf_counter

        def traced(inner, x):
            outer = self.layer
            self.layer = name
            t0 = now()
            y = inner(x)
            t1 = now()
            self.layer = outer
            if layer.training:  # evaluation's forwards stay inside its phase
                events.append(("compute", label, kind, t0, t1, clock.step,
                               {"layer": name, "type": typename, "shape": getattr(x, "shape", ())}))
            return y
        return traced

    def _unwrap(self):
        for wrap in reversed(self._wrapped):
            wrap.remove()
        self._wrapped.clear()

    # ---- recording ---------------------------------------------------------------------
    def phase(self, name, step, start, end):
        if self.active:
            self.events.append(("compute", name, "phase", start, end, step, None))
            version = getattr(self.layout, "version", None)  # a ps worker's parameters
            if name == "forward" and version is not None:
                self.step_args.setdefault(step, {})["weight_version"] = int(version)

    def span(self, track, name, start, end, cat="comm", **args):
        """An interval on ``track`` (the ``events.recorder`` interface)."""
        self.events.append((track, name, cat, start, end, self.layout.clock.step, args or None))

    # ---- writing -----------------------------------------------------------------------
    def close(self):
        """Close the window (idempotent): unwrap, stop recording, write the file (without
        steps if the run ended before the window)."""
        if self.written:
            return
        if events.recorder is self:
            events.recorder = None
        self._unwrap()
        self.active = False
        self.write()

    def _us(self, t):
        return round(1e6 * (t - self.offset), 3)

    def trace_events(self):
        tracks = {"compute": 0}
        for e in self.events:
            tracks.setdefault(e[0], len(tracks))
        out = [{"ph": "M", "name": "process_name", "pid": self.rank, "tid": 0, "args": {"name": f"rank {self.rank}"}},
               {"ph": "M", "name": "process_sort_index", "pid": self.rank, "tid": 0, "args": {"sort_index": self.rank}}]
        for track, tid in tracks.items():
            out.append({"ph": "M", "name": "thread_name", "pid": self.rank, "tid": tid, "args": {"name": track}})
            out.append({"ph": "M", "name": "thread_sort_index", "pid": self.rank, "tid": tid,
                        "args": {"sort_index": tid}})
        ends = {}
        for track, name, cat, start, end, step, args in self.events:
            if track == "compute":
                ends[step] = max(ends.get(step, end), end)
        steps = sorted(s for s in self.starts if s != "end")
        for i, step in enumerate(steps):
            end = self.starts[steps[i + 1]] if i + 1 < len(steps) else self.starts.get("end", ends.get(step))
            if end is None:
                continue
            end = max(end, ends.get(step, end))
            args = {"step": step, **self.step_args.get(step, {})}
            out.append({"ph": "X", "name": f"ProfilerStep#{step}", "cat": "step", "pid": self.rank, "tid": 0,
                        "ts": self._us(self.starts[step]), "dur": round(1e6 * (end - self.starts[step]), 3),
                        "args": args})
        for track, name, cat, start, end, step, args in self.events:
            event = {"ph": "X", "name": name, "cat": cat, "pid": self.rank, "tid": tracks[track],
                     "ts": self._us(start), "dur": round(1e6 * (end - start), 3)}
            event["args"] = dict(args or {}, step=step)
            if "shape" in event["args"]:
                event["args"]["shape"] = [int(n) for n in event["args"]["shape"]]
            out.append(event)
        return out

    def write(self):
        self.written = True
        document = {"traceEvents": self.trace_events(), "distributedInfo": self.info, "displayTimeUnit": "ms",
                    "window": list(self.window)}
        os.makedirs(self.directory, exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w") as f:
            json.dump(document, f, separators=(",", ":"))
        os.replace(temporary, self.path)
        self.events.clear()
