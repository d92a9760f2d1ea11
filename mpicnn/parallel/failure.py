"""No hangs: unexpected exceptions abort the job; user errors are agreed collectively.

An MPI job in which one rank raises while the others wait in a collective hangs until
the wall clock runs out (FACTS.md). Two rules prevent it:

- ``install_abort_hook``: an unhandled exception prints that rank's traceback and calls
  ``COMM_WORLD.Abort``, which ends every rank within about a second.
- ``agree(comm)``: a block whose outcome may differ between ranks (reading a file,
  a checkpoint) ends with a collective vote; if any rank raised ``UserError`` every
  rank raises it, with the message of the lowest failing rank, so all exit cleanly.
"""
import sys
import time
import traceback
from contextlib import contextmanager

from mpi4py import MPI

from ..errors import UserError


def install_abort_hook(comm=MPI.COMM_WORLD):
    def hook(kind, value, tb):
        rank = comm.Get_rank()
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write("".join(f"[rank {rank}] {line}\n" for line in text.rstrip().splitlines()))
        sys.stderr.flush()
        if comm.Get_size() > 1:
            # Give the launcher a moment to forward this rank's output: Abort tears the
            # job down at once, and a busy node has been seen to drop the traceback.
            time.sleep(0.2)
            comm.Abort(1)
        sys.exit(1)

    sys.excepthook = hook


@contextmanager
def agree(comm):
    """Run the block on every rank; if it raised UserError anywhere, raise it everywhere."""
    message = None
    try:
        yield
    except UserError as e:
        message = str(e)
    if comm.Get_size() > 1:
        messages = comm.allgather(message)
        message = next((m for m in messages if m is not None), None)
    if message is not None:
        error = UserError(message)
        error.agreed = True  # every rank raises it: exiting cleanly cannot hang
        raise error
