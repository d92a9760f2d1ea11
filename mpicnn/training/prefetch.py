"""The next batch read (and augmented) in one background thread while this step computes.

``Prefetch.ahead(key, read)`` starts ``read()`` in the thread; ``take(key, read)``
returns its result if the thread was reading ``key`` (waiting for it to finish), else
runs ``read()`` here. A key says everything the read depends on (the step and this
rank's pieces of it), so a batch read ahead under other pieces (a dynamic re-balance
since) is dropped, never used: the batches are those of a run without prefetch, bit
for bit. An exception in the thread is raised by ``take``.

The thread only reads files and computes on host arrays: it makes no MPI call (the
ranks' collectives stay in the main thread) and it is the only thread reading the
training set, so h5py is never entered by two readers of one file at once. Signals
(preemption) are delivered to the main thread as before; ``close`` waits for a read
in flight before the files close.
"""
from concurrent.futures import ThreadPoolExecutor


class Prefetch:
    def __init__(self, enabled=True):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="mpicnn-prefetch") if enabled else None
        self.key, self.future = None, None

    enabled = property(lambda self: self.pool is not None)

    def ahead(self, key, read):
        """Start reading ``key`` in the background (nothing if prefetch is off)."""
        if self.enabled:
            self.key, self.future = key, self.pool.submit(read)

    def take(self, key, read):
        """The result of ``read()`` for ``key``: the one read ahead if it matches."""
        future, self.future = self.future, None
        if future is not None:
            result = future.result()  # waits; re-raises the thread's exception
            if self.key == key:
                return result
        return read()

    def close(self):
        if self.enabled:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.future = None
