"""Queue, SimpleQueue and JoinableQueue on the Rust core's shared-memory ring.

Items travel as pickles (protocol 5, the stdlib's ForkingPickler). A ``put`` writes the
item into the ring before it returns. ``close`` is local to this object, as in the
stdlib: later calls on it raise ``ValueError`` (``empty`` raises ``OSError``, as the
stdlib's closed reader does); other handles and processes go on.

An unbounded ``Queue`` (``maxsize`` 0) never makes ``put`` wait, as the stdlib's does not:
when its ring is full (4 MiB of small items; large ones travel apart), the items this
process puts wait in a buffer of the process, in order, and a feeder thread moves them
into the ring as room appears. That is the stdlib's feeder thread, started only when the
ring is full, with its rules: a process waits at exit until its buffer is in the ring
(``cancel_join_thread`` drops the buffer instead), and ``join_thread`` after ``close``
waits for it. A bounded queue, a ``SimpleQueue`` and a ``JoinableQueue`` never buffer
(a ``JoinableQueue`` counts a task when its item is in the ring, so buffering would let
``join`` return early)."""

import collections
import os
import threading
import weakref
from queue import Full as _Full

from multiprocessing.util import Finalize

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


class _Feed:
    """What one process put on an unbounded Queue while its ring was full, in order, and
    the feeder thread that moves it into the ring as room appears (through a handle of
    its own, so that ``close`` of the user's handle leaves it working)."""

    def __init__(self, fd):
        self.queue = _native.Queue(fd=fd)
        self.items = collections.deque()
        self.cond = threading.Condition(threading.Lock())
        self.thread = None
        self.pid = os.getpid()
        self.cancelled = False
        # At exit the process waits for its buffer to reach the ring, as the stdlib's
        # Queue waits for its feeder thread (same priority, so the same order).
        Finalize(self, _Feed._join_at_exit, args=(weakref.ref(self),), exitpriority=-5)

    @staticmethod
    def _join_at_exit(ref):
        feed = ref()
        if feed is not None:
            feed.join()

    def take(self, data):
        """Buffers ``data`` if items are buffered already (order); ``False`` otherwise."""
        with self.cond:
            if not self.items:
                return False
            self.items.append(data)
            return True

    def add(self, data):
        with self.cond:
            self.items.append(data)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="multiproc-queue-feeder", daemon=True)
                self.thread.start()

    def _run(self):
        while True:
            with self.cond:
                if not self.items or self.cancelled:
                    self.items.clear()
                    self.thread = None
                    self.cond.notify_all()
                    return
                data = self.items[0]
            try:
                self.queue.put(data)
            except BaseException:
                import traceback

                traceback.print_exc()
                with self.cond:
                    self.cancelled = True
                continue
            with self.cond:
                self.items.popleft()

    def join(self):
        """Waits until the buffer is in the ring (at once after ``cancel``)."""
        if self.pid != os.getpid():
            return
        with self.cond:
            while self.thread is not None and not self.cancelled:
                self.cond.wait()

    def cancel(self):
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()


class Queue(_Items, _native.Queue):
    """``multiprocessing.Queue``: ``Queue(maxsize=0)``."""

    __slots__ = ("_feed",)
    _put_bytes = _native.Queue.put
    _get_bytes = _native.Queue.get

    def put(self, obj, block=True, timeout=None):
        data = dumps(obj)
        if self.maxsize:
            return _native.Queue.put(self, data, block, timeout)
        feed = self._own_feed()
        if feed is not None and feed.take(data):
            return
        try:
            _native.Queue.put(self, data, False)
        except _Full:
            if feed is None:
                feed = self._feed = _Feed(self.export_fd())
            feed.add(data)

    def _own_feed(self):
        """This process's buffer, if it has one (a forked child does not inherit its
        parent's)."""
        feed = getattr(self, "_feed", None)
        if feed is not None and feed.pid != os.getpid():
            feed = self._feed = None
        return feed

    def join_thread(self):
        assert self.closed, "Queue {0!r} not closed".format(self)
        feed = self._own_feed()
        if feed is not None:
            feed.join()

    def cancel_join_thread(self):
        feed = self._own_feed()
        if feed is not None:
            feed.cancel()


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
