"""Does ``--augment`` pay? Test accuracy with and without it: the real trainer under mpiexec.

The protocol is fixed before any run, so no seed or epoch count is picked after the
fact: for each model, seeds 0, 1 and 2, the default job (2 ranks, global batch 64, Adam,
cosine schedule) run for the model's fixed number of epochs, without ``--augment`` and
with ``--augment crop:2`` (digits shift by up to 2 pixels; they are not mirror-symmetric,
so no flip). Epochs are set where the run without augmentation has long fitted its
training set (loss near 0 by a third of the run), which is where a user would reach for
augmentation. The accuracy reported is the final test accuracy of each run (no best-epoch
picking). A row per (model, seed), then each model's means and the seeds it loses on.
"""
from ..parallel.launcher import mpi_env
from .scaling import run_trainer

PROTOCOL = {"lenet5": 60, "convnet": 20}  # model -> epochs
SEEDS = (0, 1, 2)
AUGMENT = "crop:2"


def bench_augment(models=tuple(PROTOCOL), seeds=SEEDS, epochs=None, dataset="mnist5k", augment=AUGMENT, ranks=2,
                  extra=()):
    """Rows (model, seed, accuracy without and with ``augment``) and per-model summaries.
    ``epochs``: model -> epochs (default ``PROTOCOL``)."""
    epochs = epochs or PROTOCOL
    env = mpi_env()
    rows, summary = [], []
    for model in models:
        mine = []
        for seed in seeds:
            args = ["--model", model, "--dataset", dataset, "--epochs", str(epochs[model]), "--seed", str(seed),
                    *extra]
            plain = run_trainer(ranks, args, env)
            augmented = run_trainer(ranks, args + ["--augment", augment], env)
            row = {"model": model, "epochs": epochs[model], "seed": seed,
                   "accuracy": plain["test_accuracy"], "accuracy_augmented": augmented["test_accuracy"],
                   "test_loss": plain["test_loss"], "test_loss_augmented": augmented["test_loss"],
                   "images_per_sec": plain["images_per_sec"],
                   "images_per_sec_augmented": augmented["images_per_sec"]}
            row["gain_points"] = 100 * (row["accuracy_augmented"] - row["accuracy"])
            rows.append(row)
            mine.append(row)
            print(f"{model} seed {seed}: {100 * row['accuracy']:.2f}% without, "
                  f"{100 * row['accuracy_augmented']:.2f}% with --augment {augment}", flush=True)
        n = len(mine)
        summary.append({"model": model, "epochs": epochs[model], "seeds": n,
                        "mean_accuracy": sum(r["accuracy"] for r in mine) / n,
                        "mean_accuracy_augmented": sum(r["accuracy_augmented"] for r in mine) / n,
                        "wins": sum(r["gain_points"] > 0 for r in mine), "ties": sum(r["gain_points"] == 0 for r in mine),
                        "losses": sum(r["gain_points"] < 0 for r in mine)})
    return rows, summary
