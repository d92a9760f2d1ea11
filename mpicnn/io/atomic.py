"""Write a file all at once or not at all: a temporary file in the same directory,
fsynced, then renamed over the target (and the directory fsynced, so the rename lasts).
A reader never sees half a file, and a failure leaves the previous file, or none."""
import os
import tempfile
from contextlib import contextmanager

from ..errors import UserError


def refuse_existing(path, overwrite):
    """UserError if ``path`` is a folder, or exists and may not be overwritten (the
    commands' --force). Every atomic write checks it; a command calls it first to fail
    before its work."""
    if os.path.isdir(path):
        example = os.path.join(os.fspath(path), "out" + (os.path.splitext(path)[1] or ".h5"))
        raise UserError(f"output {os.fspath(path)!r} is a folder; give the file to write, such as {example!r}")
    if not overwrite and os.path.exists(path):
        raise UserError(f"output file {os.fspath(path)!r} already exists; pass --force to overwrite it")


@contextmanager
def atomic_path(path, overwrite=True):
    """Yield a temporary path next to ``path`` to write; on success the file is fsynced,
    made readable as a new file would be, renamed over ``path``, and the directory fsynced
    (so the rename lasts). Missing parent folders are made for it. On any failure the
    temporary file is removed, and the folders made for it too: a failure leaves nothing."""
    refuse_existing(path, overwrite)
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    made = missing_folders(directory)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".tmp.")
        os.close(fd)
    except OSError as e:
        _remove_folders(made)
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
        _remove_folders(made)
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


def missing_folders(directory):
    """The folders of ``directory`` that do not exist yet, deepest first."""
    missing = []
    while not os.path.exists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing


def _remove_folders(folders):
    for folder in folders:  # deepest first
        try:
            os.rmdir(folder)
        except OSError:     # not made here, or something else was written into it
            break


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
