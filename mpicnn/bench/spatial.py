"""Spatial-parallel scaling: the real trainer under mpiexec, one BLAS thread per rank.

For each image size, convnet on ``shapes:SIZE`` with the same global batch runs on 1
rank and on each spatial grid (``--parallel spatial=PxQ``); images/s and the peak
resident memory per rank come from the trainer's final metrics record, the halo bytes
and the time blocked waiting for halos per layer from its ``halo`` figures (rank 0).
Each grid runs twice, with the forward overlap of conv halos on and off
(``MPICNN_HALO_OVERLAP``): the fraction of forward waiting hidden by overlap is
1 - wait(overlap) / wait(no overlap). Runs are interleaved ``repeats`` times and the
median is reported (FACTS.md: differences under ~20% are noise on a 2-core machine).

``volumes=True``: cosmoflow on ``cosmo:SIZE`` volumes and grids ``PxQxR`` (depth x
height x width) instead; 3-D halos are exchanged before the op (no overlap runs).
"""
import json
import sys

from ..parallel.launcher import mpi_env
from .scaling import interleaved, run_trainer


def bench_spatial(sizes=(256, 512), grids=("2x1",), batch_size=16, steps=8, repeats=1, model="convnet",
                  extra=(), volumes=False):
    """Rows of the scaling table and rows of the per-layer halo table."""
    env = mpi_env()
    rows, layers = [], []
    overlaps = ("0",) if volumes else ("1", "0")
    for size in sizes:
        # Few test images: the trainer evaluates once at the end (not timed, but slow at 512^2).
        if volumes:
            dataset, model = f"cosmo:{size}:{max(2 * batch_size, 8)}", "cosmoflow"
        else:
            dataset = f"shapes:{size}:{max(4 * batch_size, 64)}"
        argv = ["--model", model, "--dataset", dataset, "--batch-size", str(batch_size), "--steps", str(steps),
                "--no-progress", "--eval-every", str(10 ** 9), "--eval-batch-size", str(batch_size), *extra]
        base_grid = "1x1x1" if volumes else "1x1"
        layouts = [(base_grid, 1, None)] + [(g, _ranks(g), o) for g in grids for o in overlaps]

        def launch(key):
            grid, n, overlap = key
            run_env = dict(env, MPICNN_HALO_OVERLAP=overlap or "1")
            extra_argv = [] if n == 1 else ["--parallel", f"spatial={grid}"]
            return run_trainer(n, argv + extra_argv, run_env)
        medians = interleaved(layouts, repeats, launch)
        base = medians[layouts[0]][0]
        for key in layouts:
            grid, n, overlap = key
            final = medians[key][0]
            halo = final.get("halo") or {}
            calls = max([s["calls"] for s in halo.values()] or [1])
            row = {"image": size, "grid": grid, "ranks": n, "overlap": {"1": "on", "0": "off"}.get(overlap, "-"),
                   "images_per_sec": final["images_per_sec"],
                   "speedup": final["images_per_sec"] / base["images_per_sec"],
                   "peak_mb_per_rank": final["peak_rss_mb"],
                   "memory_vs_1_rank": final["peak_rss_mb"] / base["peak_rss_mb"],
                   "halo_mb_per_step": sum(s["bytes"] for s in halo.values()) / calls / 2 ** 20,
                   "halo_wait_ms_per_step": 1e3 * sum(s["forward_wait_s"] + s["backward_wait_s"]
                                                      for s in halo.values()) / calls,
                   "samples": medians[key][1]}
            rows.append(row)
        for grid in grids:
            on = medians[(grid, _ranks(grid), overlaps[0])][0].get("halo") or {}
            off = medians[(grid, _ranks(grid), "0")][0].get("halo") or {}
            for name, s in sorted(off.items(), key=lambda kv: _layer_order(kv[0])):
                o = on.get(name, s)
                calls = max(s["calls"], 1)
                wait_off = s["forward_wait_s"] / calls
                wait_on = o["forward_wait_s"] / max(o["calls"], 1)
                layers.append({"image": size, "grid": grid, "layer": name,
                               "halo_kb_per_step": s["bytes"] / calls / 1024,
                               "fwd_wait_ms_no_overlap": 1e3 * wait_off, "fwd_wait_ms_overlap": 1e3 * wait_on,
                               "hidden_fraction": 1 - wait_on / wait_off if wait_off > 0 and not volumes else None,
                               "bwd_wait_ms": 1e3 * s["backward_wait_s"] / calls})
    return rows, layers


def _layer_order(name):
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def _ranks(grid):
    n = 1
    for part in grid.split("x"):
        n *= int(part)
    return n


if __name__ == "__main__":
    json.dump(bench_spatial(), sys.stdout)
