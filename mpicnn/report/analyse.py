"""The analyses of a traced window (``mpicnn.report``), from the per-rank traces.

- ``breakdown``: per rank, seconds per step in compute, communication, waiting, data,
  idle (and evaluation/checkpoint). Each instant of a step counts once, for the
  innermost span on the compute track: phases forward/backward/optimizer, layers and
  the straggler switch's sleep are compute; waits are waiting; blocking communication
  and the exchange phase's own time are communication; the data phase is data; time
  inside ProfilerStep and no phase is idle (loop overhead, bookkeeping). Anything
  under an evaluation or checkpoint phase counts as ``evaluation``.
- ``straggler``: the rank that arrives last at the step's collectives (start of its
  exchange phase, on rank 0's clock) most often; ``factor``: the median over steps of
  its compute over the other ranks' (median) in the same step; ``late_ms``: how much later it arrives (median).
  None where no rank computes longer than the others, or where the ranks do different
  work (pipeline stages, parameter servers and workers); ``straggler_note`` says why.
- ``allreduce_hidden_fraction``: the share of the gradient buckets' allreduce time
  (launch to completion) that overlaps backward.
- ``pipeline_bubble``: per stage 1 - busy/wall as the summary measures it: busy is
  forward and backward time, wall per step the longest (over ranks) span from the
  stage's first compute or message to its last.
- ``halo``: per layer, bytes and waiting per step; ``ps_weight_age``: step - version of
  the parameters each worker step used.
"""
import statistics

from .traces import nest

COMPUTE = {"forward", "backward", "straggler"}
PHASE_KIND = {"data": "data", "forward": "compute", "backward": "compute", "optimizer": "compute",
              "exchange": "communication", "evaluation": "evaluation", "checkpoint": "evaluation"}
KINDS = ("compute", "communication", "waiting", "data", "idle", "evaluation")


def _kind(e):
    cat = e.get("cat")
    if cat == "step":
        return "idle"
    if cat == "phase":
        return PHASE_KIND.get(e["name"], "compute")
    if cat in COMPUTE:
        return "compute"
    return "waiting" if cat == "wait" else "communication"


def _evaluating(spans):
    """{id(span): whether it lies under an evaluation or checkpoint phase} of one
    compute track, and each span's own time (its duration less its children's)."""
    parents = nest(spans)
    own = {id(e): e["dur"] for e in spans}
    under = {}
    for e, p in zip(spans, parents):  # parents come before their children
        if p is not None:
            own[id(p)] -= e["dur"]
        under[id(e)] = p is not None and (under[id(p)] or (p.get("cat") == "phase"
                                                            and PHASE_KIND.get(p["name"]) == "evaluation"))
    return under, own


def step_kinds(trace):
    """{step: {kind: seconds}} of one rank's compute track."""
    spans = trace.track("compute")
    under, own = _evaluating(spans)
    out = {}
    for e in spans:
        kind = "evaluation" if under[id(e)] else _kind(e)  # evaluation takes everything under it
        step = e["args"]["step"]
        per = out.setdefault(step, dict.fromkeys(KINDS, 0.0))
        per[kind] += max(own[id(e)], 0.0) / 1e6
    return out


def breakdown(per_step):
    """{rank: {kind: mean seconds per step}} from {rank: step_kinds}."""
    result = {}
    for rank, steps in per_step.items():
        n = max(len(steps), 1)
        result[rank] = {k: sum(s[k] for s in steps.values()) / n for k in KINDS}
        result[rank]["steps"] = len(steps)
    return result


def straggler(traces, per_step):
    """(the straggler or None, a note saying why none was named or None)."""
    if len(traces) < 2 or not all(per_step.values()):
        return None, None
    roles = {t.info.get("role") for t in traces}
    if "PipelineStage" in roles or len(roles) > 1:
        work = "pipeline stages" if "PipelineStage" in roles else " and ".join(sorted(map(str, roles)))
        return None, f"not compared: {work} do different work, so their compute times do not show a slow rank"
    arrivals = {}  # step -> {rank: start of its first exchange phase}
    for t in traces:
        for e in t.track("compute"):
            if e.get("cat") == "phase" and e["name"] == "exchange":
                arrivals.setdefault(e["args"]["step"], {}).setdefault(t.rank, e["ts"])
    last = {}
    late = {}
    for step, at in arrivals.items():
        if len(at) < 2:
            continue
        r = max(at, key=at.get)
        last[r] = last.get(r, 0) + 1
        others = [v for k, v in at.items() if k != r]
        late.setdefault(r, []).append((at[r] - statistics.median(others)) / 1e3)
    compute = {t.rank: statistics.median(s["compute"] for s in per_step[t.rank].values()) for t in traces}
    rank = max(last, key=lambda r: (last[r], compute[r])) if last else max(compute, key=compute.get)
    # Per step against the others' in the same step, then the median: on a shared node a
    # rank that loses its core stretches single steps, and the steps' loads differ.
    ratios = []
    for step, mine in per_step[rank].items():
        others = [per_step[r][step]["compute"] for r in per_step if r != rank and step in per_step[r]]
        if others and statistics.median(others) > 0:
            ratios.append(mine["compute"] / statistics.median(others))
    factor = statistics.median(ratios) if ratios else None
    if factor is None or factor <= 1.0:
        return None, f"none: rank {rank}, last at collectives most often, computes no longer than the others"
    return {"rank": rank, "factor": factor,
            "last_at_collectives": f"{last.get(rank, 0)}/{len(arrivals)} steps",
            "late_ms": statistics.median(late[rank]) if rank in late else None,
            "compute_s_per_step": compute}, None


def _overlap(a0, a1, intervals):
    return sum(max(0.0, min(a1, b1) - max(a0, b0)) for b0, b1 in intervals)


def allreduce_hidden(traces):
    """(mean over ranks, {rank: fraction}) of allreduce time overlapping backward."""
    per = {}
    for t in traces:
        backward = [(e["ts"], e["end"]) for e in t.track("compute")
                    if e.get("cat") == "phase" and e["name"] == "backward"]
        buckets = [e for e in t.spans if e["track"].startswith("allreduce ")]
        total = sum(e["dur"] for e in buckets)
        if total:
            per[t.rank] = sum(_overlap(e["ts"], e["end"], backward) for e in buckets) / total
    return (sum(per.values()) / len(per) if per else None), per


def pipeline_bubble(traces):
    """Per stage bubble, the ideal (S-1)/(M+S-1), or None without pipeline stages."""
    stages = [t for t in traces if t.info.get("role") == "PipelineStage"]
    if not stages:
        return None
    S = 1 + max(t.info["grid"]["stage"] for t in stages)
    busy, spans, micro = {}, {}, 1
    for t in stages:
        s = t.info["grid"]["stage"]
        compute = t.track("compute")
        under, _ = _evaluating(compute)
        for e in compute:
            name, step = e["name"], e["args"]["step"]
            if under[id(e)]:
                continue
            is_compute = e.get("cat") == "phase" and name in ("forward", "backward")
            is_message = name.startswith(("wait recv ", "send "))
            if not (is_compute or is_message):
                continue
            if is_compute:
                busy.setdefault(s, {}).setdefault(t.rank, 0.0)
                busy[s][t.rank] += e["dur"]
            lo, hi = spans.get((t.rank, step), (e["ts"], e["end"]))
            spans[(t.rank, step)] = (min(lo, e["ts"]), max(hi, e["end"]))
        forwards = {}
        for e in t.track("compute"):
            if e.get("cat") == "phase" and e["name"] == "forward":
                forwards[e["args"]["step"]] = forwards.get(e["args"]["step"], 0) + 1
        micro = max(forwards.values(), default=1)
    walls = {}
    for (rank, step), (lo, hi) in spans.items():
        walls[step] = max(walls.get(step, 0.0), hi - lo)
    wall = sum(walls.values())
    per_stage = {s: 1.0 - statistics.mean(b.values()) / wall for s, b in sorted(busy.items())} if wall else {}
    return {"per_stage": per_stage, "mean": statistics.mean(per_stage.values()) if per_stage else None,
            "ideal": (S - 1) / (micro + S - 1), "stages": S, "micro_batches": micro, "steps": len(walls)}


def halo(traces):
    """{layer: {bytes_per_step, forward_wait_ms, backward_wait_ms}} per rank, or None."""
    out = {}
    for t in traces:
        steps = max(len(t.steps()), 1)
        for e in t.spans:
            if e["track"] == "halo":
                a = e["args"]
                row = out.setdefault(t.rank, {}).setdefault(a["layer"], {"bytes_per_step": 0.0, "forward_wait_ms": 0.0,
                                                                         "backward_wait_ms": 0.0})
                row["bytes_per_step"] += a["bytes"] / steps
            elif e.get("cat") == "wait" and e["name"].startswith("wait halo"):
                a = e["args"]
                row = out.setdefault(t.rank, {}).setdefault(a["layer"], {"bytes_per_step": 0.0, "forward_wait_ms": 0.0,
                                                                         "backward_wait_ms": 0.0})
                row[a["direction"] + "_wait_ms"] += e["dur"] / 1e3 / steps
    return out or None


def allreduce_bytes_per_layer(traces):
    """{layer: gradient bytes per step} of rank 0's leaf layers, where buckets were traced."""
    for t in traces:
        if any(e["track"].startswith("allreduce ") for e in t.spans):
            return {row["name"]: row["parameter_bytes"] for row in t.info.get("layers", []) if row["parameter_bytes"]}
    return None


def ps_weight_age(traces):
    out = {}
    for t in traces:
        ages = [s - e["args"]["weight_version"] for s, e in t.steps().items() if "weight_version" in e["args"]]
        if ages:
            out[t.rank] = {"mean": statistics.mean(ages), "max": max(ages), "steps": len(ages)}
    return out or None


def analyse(traces):
    per_step = {t.rank: step_kinds(t) for t in traces}
    hidden, hidden_per_rank = allreduce_hidden(traces)
    slow, slow_note = straggler(traces, per_step)
    return {"ranks": len(traces), "window": {t.rank: sorted(t.steps()) for t in traces},
            "layout": traces[0].info.get("layout") if traces else None,
            "clock_error_us": {t.rank: t.info.get("clock_error_us") for t in traces},
            "breakdown": breakdown(per_step), "straggler": slow, "straggler_note": slow_note,
            "allreduce_hidden_fraction": hidden, "allreduce_hidden_per_rank": hidden_per_rank,
            "pipeline_bubble": pipeline_bubble(traces), "halo": halo(traces),
            "allreduce_bytes_per_layer": allreduce_bytes_per_layer(traces), "ps_weight_age": ps_weight_age(traces)}
