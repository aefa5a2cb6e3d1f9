"""Queue, SimpleQueue and JoinableQueue on the Rust core's shared-memory ring.

Items travel as pickles (protocol 5, the stdlib's ForkingPickler). A ``put`` writes the
item into the ring before it returns (there is no feeder thread), so ``join_thread`` and
``cancel_join_thread`` have nothing to wait for. ``close`` is local to this object, as in
the stdlib: later calls on it raise ``ValueError`` (``empty`` raises ``OSError``, as the
stdlib's closed reader does); other handles and processes go on."""

from . import _native
from ._pickle import dumps, loads, reduce_by_fd

__all__ = ["Queue", "SimpleQueue", "JoinableQueue"]


class _Items:
    """The stdlib's item methods over a native queue of bytes."""

    __slots__ = ()

    def put(self, obj, block=True, timeout=None):
        self._put_bytes(dumps(obj), block, timeout)

    def get(self, block=True, timeout=None):
        return loads(self._get_bytes(block, timeout))

    def put_nowait(self, obj):
        return self.put(obj, False)

    def get_nowait(self):
        return self.get(False)

    def empty(self):
        # The stdlib's reader reports a closed handle with OSError.
        if self.closed:
            raise OSError("handle is closed")
        return super().empty()

    def join_thread(self):
        assert self.closed, "Queue {0!r} not closed".format(self)

    def cancel_join_thread(self):
        pass

    def __reduce__(self):
        return reduce_by_fd(self, self.export_fd())

    def __repr__(self):
        state = "closed" if self.closed else "maxsize={}".format(self.maxsize)
        return "<{}.{} {} at {:#x}>".format(
            type(self).__module__, type(self).__qualname__, state, id(self)
        )


class Queue(_Items, _native.Queue):
    """``multiprocessing.Queue``: ``Queue(maxsize=0)``."""

    __slots__ = ()
    _put_bytes = _native.Queue.put
    _get_bytes = _native.Queue.get


class JoinableQueue(_Items, _native.JoinableQueue):
    """``multiprocessing.JoinableQueue``: a Queue with ``task_done`` and ``join``."""

    __slots__ = ()
    _put_bytes = _native.JoinableQueue.put
    _get_bytes = _native.JoinableQueue.get


class SimpleQueue(_native.Queue):
    """``multiprocessing.SimpleQueue``: an unbounded queue with ``put``, ``get``,
    ``empty`` and ``close``."""

    __slots__ = ()

    def __new__(cls, *, ctx=None, fd=None):
        return _native.Queue.__new__(cls, 0, fd=fd)

    def put(self, obj):
        _native.Queue.put(self, dumps(obj))

    def get(self):
        return loads(_native.Queue.get(self))

    def empty(self):
        # The stdlib's reader reports a closed handle with OSError.
        if self.closed:
            raise OSError("handle is closed")
        return _native.Queue.empty(self)

    def __reduce__(self):
        return reduce_by_fd(self, self.export_fd())
