"""Lock, RLock, Semaphore, BoundedSemaphore, Event and Condition on the Rust core's process-shared
primitives. A Lock or RLock whose holder dies is taken over by the next acquirer instead
of blocking it for ever."""

import time

from . import _native
from ._pickle import reduce_by_fd

__all__ = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition"]


class _Reduce:
    __slots__ = ()

    def __reduce__(self):
        return reduce_by_fd(self, self.export_fd())


class Lock(_Reduce, _native.Lock):
    """``multiprocessing.Lock``."""

    __slots__ = ()


class RLock(_Reduce, _native.RLock):
    """``multiprocessing.RLock``."""

    __slots__ = ()


class Semaphore(_Reduce, _native.Semaphore):
    """``multiprocessing.Semaphore(value=1)``."""

    __slots__ = ()

    def __repr__(self):
        return "<{}(value={})>".format(type(self).__name__, self.get_value())


class BoundedSemaphore(_Reduce, _native.BoundedSemaphore):
    """``multiprocessing.BoundedSemaphore(value=1)``."""

    __slots__ = ()

    def __repr__(self):
        return "<{}(value={})>".format(type(self).__name__, self.get_value())


class Event(_Reduce, _native.Event):
    """``multiprocessing.Event``."""

    __slots__ = ()

    def __repr__(self):
        state = "set" if self.is_set() else "unset"
        return "<{} at {:#x} {}>".format(type(self).__qualname__, id(self), state)


class Condition(_native.Condition):
    """``multiprocessing.Condition(lock=None)``: over ``lock`` (a Lock or RLock of this
    package; a new RLock when None). Acquiring and releasing go through the lock."""

    def __new__(cls, lock=None, *, ctx=None, fd=None):
        if lock is None:
            lock = RLock()
        self = _native.Condition.__new__(cls, lock, fd=fd)
        self._lock = lock
        return self

    def acquire(self, block=True, timeout=None):
        return self._lock.acquire(block, timeout)

    def release(self):
        self._lock.release()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *args):
        return self._lock.__exit__(*args)

    def wait_for(self, predicate, timeout=None):
        """Waits until ``predicate()`` is true, at most ``timeout`` seconds; its last
        value (the stdlib's algorithm)."""
        result = predicate()
        if result:
            return result
        endtime = None if timeout is None else time.monotonic() + timeout
        waittime = None
        while not result:
            if endtime is not None:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
            self.wait(waittime)
            result = predicate()
        return result

    def __reduce__(self):
        return reduce_by_fd(self, self.export_fd(), self._lock)

    def __repr__(self):
        return "<{}({!r})>".format(type(self).__name__, self._lock)
