"""Write a file all at once or not at all: a temporary file in the same directory,
fsynced, then renamed over the target (and the directory fsynced, so the rename lasts).
A reader never sees half a file, and a failure leaves the previous file, or none."""
import os
import tempfile
from contextlib import contextmanager

from ..errors import UserError


@contextmanager
def atomic_path(path, overwrite=True):
    """Yield a temporary path next to ``path`` to write; on success the file is fsynced,
    made readable as a new file would be, renamed over ``path``, and the directory fsynced
    (so the rename lasts). On any failure the temporary file is removed."""
    path = os.path.abspath(os.fspath(path))
    if not overwrite and os.path.exists(path):
        raise UserError(f"output file {path!r} already exists; pass --force to overwrite it")
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".tmp.")
        os.close(fd)
    except OSError as e:
        raise UserError(f"cannot write {path!r}: {e}; choose a writable location") from None
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dirfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


@contextmanager
def atomic_file(path, overwrite=True):
    """Yield a binary file to write; on success it replaces ``path`` (``atomic_path``)."""
    with atomic_path(path, overwrite) as tmp, open(tmp, "wb") as f:
        yield f


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file, through links and other spellings; where
    one does not exist (yet), whether both resolve to the same path. What keeps an output
    from being written over an input."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # samefile needs both to exist
        return os.path.realpath(a) == os.path.realpath(b)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
