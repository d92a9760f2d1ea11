"""The traces as Holistic Trace Analysis (HTA, ``pip install holistictraceanalysis``)
reads them: ``python -m mpicnn.report RUN --hta`` writes ``OUT/hta/rank{R}.trace.json``.

HTA analyses GPU kernels: events with ``cat`` "kernel" and an ``args.stream``, whose
names say what they are (``nccl...Kernel``: communication; anything else: compute).
mpicnn's device is the CPU, so this view puts on one "compute stream" (7) every span
that computes (the layers' forward and backward, the optimizer, the straggler's
stretch), and every communication span, named ``ncclKernel_...``, on communication
streams: 8 for blocking communication and the waits for communication (a NCCL kernel
on a GPU runs from the moment its rank arrives until its peers have: HTA finds a
straggler by when its kernels start), one more per track of traffic in flight (each
bucket's allreduce from launch to completion, halo exchanges), so that no stream's
kernels overlap, as HTA's idle time assumes. ``ProfilerStep#N`` stay CPU annotations,
with a zero-length CPU "launch" per kernel at its start (HTA gives a kernel the
iteration of the launch that shares its ``correlation``, and drops the last
iteration's). Loop overhead is a gap: HTA's idle time. The "rank": N in
``distributedInfo`` is written with a space after the colon: HTA finds ranks with
that regular expression.
"""
import json
import os

COMPUTE_STREAM, BLOCKING_STREAM = 7, 8  # then one stream per track of traffic in flight


def _kernel(e, name, stream, correlation):
    """The span as a kernel, and the CPU "launch" HTA links it to its iteration by."""
    return [{"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": stream, "ts": e["ts"], "dur": e["dur"],
             "args": {"stream": stream, "device": 0, "correlation": correlation, "step": e["args"].get("step")}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": e["ts"],
             "dur": 0.001, "args": {"correlation": correlation}}]


def hta_events(trace):
    # One stream per track of traffic in flight (buckets overlap one another), and one for
    # the blocking communication of the compute track: a stream's kernels never overlap.
    tracks = sorted({e["track"] for e in trace.spans if e["track"] != "compute"})
    streams = {name: BLOCKING_STREAM + 1 + i for i, name in enumerate(tracks)}
    streams["compute"] = BLOCKING_STREAM
    out, correlation = [], 0
    optimizer_end = float("-inf")  # the straggler's sleep after an update lies inside its phase's kernel
    for e in trace.spans:
        cat = e.get("cat")
        if cat == "straggler" and e["ts"] < optimizer_end:
            continue
        if cat == "phase" and e["name"] == "optimizer":
            optimizer_end = e["ts"] + e["dur"]
        if cat == "step":
            out.append({"ph": "X", "cat": "user_annotation", "name": e["name"], "pid": 1, "tid": 1,
                        "ts": e["ts"], "dur": e["dur"], "args": {}})
            continue
        correlation += 1
        if cat in ("forward", "backward", "straggler") or (cat == "phase" and e["name"] == "optimizer"):
            out += _kernel(e, f"{cat} {e['args'].get('layer', e['name'])}", COMPUTE_STREAM, correlation)
        elif cat in ("comm", "wait"):  # a NCCL kernel on a GPU also runs while it waits for peers
            out += _kernel(e, "ncclKernel_" + e["name"].replace(" ", "_"), streams[e["track"]], correlation)
    return out


def export(traces, directory):
    """Write the HTA view of every rank into ``directory``; returns it."""
    os.makedirs(directory, exist_ok=True)
    for t in traces:
        document = {"distributedInfo": dict(t.info, backend="nccl"), "deviceProperties": [{"id": 0, "name": "CPU"}],
                    "traceEvents": hta_events(t)}
        with open(os.path.join(directory, f"rank{t.rank}.trace.json"), "w") as f:
            json.dump(document, f, separators=(", ", ": "))
    return directory
