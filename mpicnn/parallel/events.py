"""Optional recording of communication events, for ``--trace`` (``mpicnn.io.trace``).

``recorder`` is None unless a tracer is inside its window of traced steps; each call
site reads it once (``rec = events.recorder``) and records only when it is set, so
untraced steps pay one global lookup per message. A recorder has:

- ``span(track, name, start, end, cat, **args)``: an interval of ``time.perf_counter``
  seconds on ``track`` ("compute" for what blocks the rank, like waits; "halo",
  "allreduce 3", "pipeline", ... for traffic in flight beside it);
- ``layer``: the name of the leaf layer running now (halo and channel events name it).

Waits are their own spans with ``cat="wait"``; traffic in flight ``cat="comm"``.

``comm_seconds`` is counted always, traced or not: this process's seconds blocked in
halo exchanges, channel collectives, spatial and BatchNorm reductions and pipeline
transfers. The training loop reads its change over a step, so the summary's
"communication" covers every layout, not only the gradient buckets.
"""
recorder = None
comm_seconds = 0.0


def count(seconds):
    """Add ``seconds`` of blocking communication to ``comm_seconds``."""
    global comm_seconds
    comm_seconds += seconds


def layer_name():
    """The running layer's name while recording, else None."""
    rec = recorder
    return rec.layer if rec else None
