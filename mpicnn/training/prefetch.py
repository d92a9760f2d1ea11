"""The next batch read (and augmented) in one background thread while this step computes.

``Prefetch.ahead(key, read)`` hands ``read`` to the thread; ``take(key, read)`` returns
its result if the thread was reading ``key`` (waiting for it to finish), else runs
``read()`` here. A key says everything the read depends on (the step and this rank's
pieces of it), so a batch read ahead under other pieces (a dynamic re-balance since) is
dropped, never used: the batches are those of a run without prefetch, bit for bit. An
exception in the thread is raised by ``take``.

The hand-off is two C-level queues (``queue.SimpleQueue``): the thread sleeps in
``get`` until a read arrives and the step sleeps in ``get`` until its batch does, with
no polling and no Future/Condition bookkeeping, so taking a batch that is ready costs
about a microsecond: the step's "data" time is only what it truly waited.

The thread only reads files and computes on host arrays: it makes no MPI call (the
ranks' collectives stay in the main thread) and it is the only thread reading the
training set, so h5py is never entered by two readers of one file at once. Signals
(preemption) are delivered to the main thread as before; ``close`` waits for a read
in flight before the files close.
"""
import queue
import threading


class Prefetch:
    def __init__(self, enabled=True):
        self.reads, self.results = queue.SimpleQueue(), queue.SimpleQueue()
        self.pending = None  # the key of the read handed to the thread and not yet taken
        self.thread = None
        if enabled:
            self.thread = threading.Thread(target=self._serve, name="mpicnn-prefetch", daemon=True)
            self.thread.start()

    enabled = property(lambda self: self.thread is not None)

    def _serve(self):
        """The thread: run each read handed over, pass back (result, None) or (None, error);
        a None read ends it."""
        while (read := self.reads.get()) is not None:
            try:
                self.results.put((read(), None))
            except BaseException as error:  # raised in the main thread by take()
                self.results.put((None, error))

    def ahead(self, key, read):
        """Start reading ``key`` in the background (nothing if prefetch is off)."""
        if self.enabled:
            self._collect()  # one read in flight at most
            self.pending = key
            self.reads.put(read)

    def take(self, key, read):
        """The result of ``read()`` for ``key``: the one read ahead if it matches."""
        pending = self.pending
        if pending is not None:
            result = self._collect()  # waits; re-raises the thread's exception
            if pending == key:
                return result
        return read()

    def _collect(self):
        """The result of the read in flight (None if there is none)."""
        if self.pending is None:
            return None
        self.pending = None
        result, error = self.results.get()
        if error is not None:
            raise error
        return result

    def close(self):
        if self.enabled:
            self.reads.put(None)  # after the read in flight, if any
            self.thread.join()
            self.thread, self.pending = None, None
