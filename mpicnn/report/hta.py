"""The traces as Holistic Trace Analysis (HTA, ``pip install holistictraceanalysis``)
reads them: ``python -m mpicnn.report RUN --hta`` writes ``OUT/hta/rank{R}.trace.json``.

HTA analyses GPU kernels: events with ``cat`` "kernel" and an ``args.stream``, whose
names say what they are (``nccl...Kernel``: communication; anything else: compute).
mpicnn's device is the CPU, so this view puts on one "compute stream" (7) every span
that computes (the layers' forward and backward, the optimizer, the straggler's
stretch), on a "communication stream" (8) every communication span (bucket allreduces
from launch to completion, halo exchanges, collectives) named ``ncclKernel_...``, and
keeps ``ProfilerStep#N`` as CPU annotations, with a zero-length CPU "launch" per
kernel at its start (HTA gives a kernel the iteration of the launch that shares its
``correlation``, and drops the last iteration's). Waits
and loop overhead are gaps: HTA's idle time. The "rank": N in ``distributedInfo``
is written with a space after the colon: HTA finds ranks with that regular expression.
"""
import json
import os

COMPUTE_STREAM, COMM_STREAM = 7, 8


def _kernel(e, name, stream, correlation):
    """The span as a kernel, and the CPU "launch" HTA links it to its iteration by."""
    return [{"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": stream, "ts": e["ts"], "dur": e["dur"],
             "args": {"stream": stream, "device": 0, "correlation": correlation, "step": e["args"].get("step")}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": e["ts"],
             "dur": 0.001, "args": {"correlation": correlation}}]


def hta_events(trace):
    out, correlation = [], 0
    for e in trace.spans:
        cat = e.get("cat")
        if cat == "step":
            out.append({"ph": "X", "cat": "user_annotation", "name": e["name"], "pid": 1, "tid": 1,
                        "ts": e["ts"], "dur": e["dur"], "args": {}})
            continue
        correlation += 1
        if cat in ("forward", "backward", "straggler") or (cat == "phase" and e["name"] == "optimizer"):
            out += _kernel(e, f"{cat} {e['args'].get('layer', e['name'])}", COMPUTE_STREAM, correlation)
        elif cat == "comm":
            out += _kernel(e, "ncclKernel_" + e["name"].replace(" ", "_"), COMM_STREAM, correlation)
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
