"""Lock, RLock, Semaphore, BoundedSemaphore and Event on the Rust core's process-shared
primitives. A Lock or RLock whose holder dies is taken over by the next acquirer instead
of blocking it for ever."""

from . import _native
from ._pickle import reduce_by_fd

__all__ = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event"]


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
