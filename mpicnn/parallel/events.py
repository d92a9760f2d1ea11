"""Optional recording of communication events, for ``--trace`` (``mpicnn.io.trace``).

``recorder`` is None unless a tracer is inside its window of traced steps; each call
site reads it once (``rec = events.recorder``) and records only when it is set, so
untraced steps pay one global lookup per message. A recorder has:

- ``span(track, name, start, end, cat, **args)``: an interval of ``time.perf_counter``
  seconds on ``track`` ("compute" for what blocks the rank, like waits; "halo",
  "allreduce 3", "pipeline", ... for traffic in flight beside it);
- ``layer``: the name of the leaf layer running now (halo and channel events name it).

Waits are their own spans with ``cat="wait"``; traffic in flight ``cat="comm"``.
"""
recorder = None


def layer_name():
    """The running layer's name while recording, else None."""
    rec = recorder
    return rec.layer if rec else None
