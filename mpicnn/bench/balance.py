"""Static against dynamic balance with a straggler: the real trainer under mpiexec.

Rank 1 computes ``factor`` times as long (``MPICNN_SLOW_RANK``). The static split waits
for it every step; ``--balance dynamic`` moves samples to the fast ranks. Runs are
interleaved so machine noise hits every variant alike; medians are reported."""
from ..parallel.launcher import mpi_env
from .scaling import run_trainer


def bench_balance(ranks=2, factor=2.0, steps=80, repeats=3, batch_size=128):
    args = ["--model", "lenet5", "--batch-size", str(batch_size), "--steps", str(steps),
            "--eval-every", str(10 ** 9), "--balance-every", "10"]
    variants = [("none", "static", {}),
                (f"1:{factor:g}", "static", {"MPICNN_SLOW_RANK": f"1:{factor:g}"}),
                (f"1:{factor:g}", "dynamic", {"MPICNN_SLOW_RANK": f"1:{factor:g}"})]
    runs = {i: [] for i in range(len(variants))}
    for _ in range(repeats):
        for i, (_, balance, env) in enumerate(variants):
            environ = mpi_env()
            environ.pop("MPICNN_SLOW_RANK", None)  # only the variants that ask for a straggler get one
            runs[i].append(run_trainer(ranks, args + ["--balance", balance], {**environ, **env}))
    rows = []
    for i, (slow, balance, _) in enumerate(variants):
        ordered = sorted(runs[i], key=lambda r: r["images_per_sec"])
        mid = ordered[len(ordered) // 2]
        rows.append({"ranks": ranks, "slow_rank": slow, "balance": balance,
                     "images_per_sec": mid["images_per_sec"],
                     "all_runs": [round(r["images_per_sec"]) for r in runs[i]],
                     "shares": [round(s, 3) for s in mid.get("balance", [])] or None})
    static = rows[1]["images_per_sec"]
    for row in rows:
        row["vs_static_with_straggler"] = row["images_per_sec"] / static
    return rows
