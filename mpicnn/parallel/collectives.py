"""The few job-wide MPI calls the training loop makes, so that only ``mpicnn.parallel``
talks to MPI: the job's communicator, the node-local rank, sums and maxima of small
host arrays, broadcasts of (possibly device) buffers, and aborting the job."""
from mpi4py import MPI

from .device_buffers import MPIBuffer


def world():
    """The communicator of every process of the job."""
    return MPI.COMM_WORLD


def self_comm():
    """The communicator of this process alone."""
    return MPI.COMM_SELF


def node_local(comm):
    """(rank among the ranks of ``comm`` on this node, how many share the node)."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def node_gather(comm, obj):
    """Every ``obj`` (small, in memory) of the ranks of ``comm`` on this node, in node-rank order."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.allgather(obj)
    finally:
        node.Free()


def sum_in_place(comm, array):
    """Sum the host array ``array`` over ``comm`` in place; returns it."""
    comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
    return array


def max_in_place(comm, array):
    """Element-wise maximum of the host array ``array`` over ``comm`` in place; returns it."""
    comm.Allreduce(MPI.IN_PLACE, array, op=MPI.MAX)
    return array


def max_value(comm, value):
    """The largest of a Python number over ``comm``."""
    return comm.allreduce(value, op=MPI.MAX)


def gather_objects(comm, obj):
    """Every rank's ``obj`` (small, picklable in memory only: never read from disk), in rank order."""
    return comm.allgather(obj)


def bcast_array(comm, array, root):
    """Give every rank of ``comm`` the contents of ``root``'s ``array`` (host or device), in place."""
    staged = MPIBuffer(array.reshape(-1) if array.ndim else array.reshape(1))
    staged.before()
    comm.Bcast(staged.buf, root=root)
    staged.after()
    return array


def versions():
    """{"mpi4py": its version, "mpi": the MPI library's own version line}."""
    import mpi4py
    return {"mpi4py": mpi4py.__version__, "mpi": MPI.Get_library_version().strip().splitlines()[0]}


def abort(comm, code):
    """End every rank of the job with exit status ``code`` (a rank-local failure)."""
    comm.Abort(code)
