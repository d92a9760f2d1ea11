"""Print what each training step moves between host and device on the cupy path (stand-in).

    PYTHONPATH=tests/cupy_standin:. mpiexec -n 2 python tests/cupy_standin/step_transfers.py \\
        --model lenet5 --batch-size 64 --steps 4

Trains with ``--backend cupy`` and the given options; rank 0 prints, per whole step (from
reading its batch to reading the next: the last step, which runs into the final
evaluation, is left out), each host<->device copy with its size and the line that made
it, the stream syncs, and the device buffers MPI took (``synced``: no device work was
queued). Set MPICNN_CUDA_AWARE=1 CUPY_STANDIN_CUDA_AWARE_MPI=1 for a CUDA-aware MPI.
"""
import collections
import os
import sys

from mpi4py import MPI

from cupy import standin
from mpicnn import train
from mpicnn.training.batches import Batches


def main(argv):
    read = Batches.next_batch

    def noted(self, step, reader=None):
        standin.note(f"step {step}")
        return read(self, step, reader)

    Batches.next_batch = noted
    mark = standin.mark()
    train.run(argv + ["--backend", "cupy", "--no-progress"], MPI.COMM_WORLD)
    steps, current = [], None
    for e in standin.since(mark):
        if e.kind == "note":
            current = (e.label, [])
            steps.append(current)
        elif current is not None:
            current[1].append(e)
    if MPI.COMM_WORLD.Get_rank() != 0:
        return
    for label, events in steps[:-1]:
        table = collections.Counter((e.kind, e.nbytes, e.synced, os.path.relpath(e.where.split(":")[0]),
                                     e.where.rsplit(" ", 1)[-1]) for e in events if e.kind != "note")
        copies = sum(n for (kind, *_), n in table.items() if kind in ("h2d", "d2h"))
        print(f"{label}: {copies} host<->device copies")
        for (kind, nbytes, synced, path, fn), n in sorted(table.items()):
            extra = f" synced={synced}" if kind in ("mpi", "mpi_refused") else ""
            print(f"  {n} x {kind:<4} {nbytes:>9} B{extra}  {path} {fn}")


if __name__ == "__main__":
    main(sys.argv[1:])
