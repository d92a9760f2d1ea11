"""Static against dynamic balance with a straggler: the real trainer under mpiexec.

Rank 1 computes ``factor`` times as long (``MPICNN_SLOW_RANK``). The static split waits
for it every step; ``--balance dynamic`` moves samples to the fast ranks. Runs are
interleaved so machine noise hits every variant alike; medians are reported."""
from ..parallel.launcher import mpi_env
from .scaling import interleaved, run_trainer


def bench_balance(ranks=2, factor=2.0, steps=80, repeats=3, batch_size=128):
    args = ["--model", "lenet5", "--batch-size", str(batch_size), "--steps", str(steps),
            "--eval-every", str(10 ** 9), "--balance-every", "10"]
    variants = [("none", "static", {}),
                (f"1:{factor:g}", "static", {"MPICNN_SLOW_RANK": f"1:{factor:g}"}),
                (f"1:{factor:g}", "dynamic", {"MPICNN_SLOW_RANK": f"1:{factor:g}"})]

    def launch(i):
        environ = mpi_env()
        environ.pop("MPICNN_SLOW_RANK", None)  # only the variants that ask for a straggler get one
        return run_trainer(ranks, args + ["--balance", variants[i][1]], {**environ, **variants[i][2]})
    rows = []
    for i, (mid, all_runs) in interleaved(range(len(variants)), repeats, launch).items():
        slow, balance, _ = variants[i]
        rows.append({"ranks": ranks, "slow_rank": slow, "balance": balance,
                     "images_per_sec": mid["images_per_sec"], "all_runs": all_runs,
                     "shares": [round(s, 3) for s in mid.get("balance", [])] or None})
    static = rows[1]["images_per_sec"]
    for row in rows:
        row["vs_static_with_straggler"] = row["images_per_sec"] / static
    return rows
