"""Contexts: the stdlib's, with this package's queues, pipes and locks.

Each start method has a context class that subclasses the stdlib's own (so it is a
``multiprocessing.context.BaseContext`` and starts processes exactly as the stdlib does)
and overrides the factories that this package implements. The default context follows
the stdlib's default start method, so ``multiproc.set_start_method`` and
``multiprocessing.set_start_method`` are one setting."""

import multiprocessing.context as _std

__all__ = ["BaseContext", "DefaultContext", "ForkContext", "SpawnContext", "ForkServerContext"]

#: Names whose objects are this package's (the Rust core does the work).
OURS = (
    "Queue",
    "SimpleQueue",
    "JoinableQueue",
    "Pipe",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "Condition",
    "Value",
    "Array",
    "RawValue",
    "RawArray",
    "Pool",
)

#: Names that are still the stdlib's objects, to be replaced by the Rust core's. (The
#: stdlib's Barrier waits on this package's Condition: contexts give it ours.)
STDLIB_FOR_NOW = (
    "Barrier",
    "Manager",
)

#: Names that are the stdlib's on purpose: it already does them right.
STDLIB_BY_DESIGN = (
    "Process",
    "current_process",
    "parent_process",
    "active_children",
    "cpu_count",
    "freeze_support",
    "get_logger",
    "log_to_stderr",
    "set_executable",
    "set_forkserver_preload",
    "allow_connection_pickling",
    "ProcessError",
    "BufferTooShort",
    "TimeoutError",
    "AuthenticationError",
)


class _Ours:
    """The factories that return this package's objects; mixed into each context."""

    def Queue(self, maxsize=0):
        """A queue on the shared-memory ring."""
        from .queues import Queue

        return Queue(maxsize, ctx=self)

    def SimpleQueue(self):
        """An unbounded queue with put, get, empty and close."""
        from .queues import SimpleQueue

        return SimpleQueue(ctx=self)

    def JoinableQueue(self, maxsize=0):
        """A queue with task_done and join."""
        from .queues import JoinableQueue

        return JoinableQueue(maxsize, ctx=self)

    def Pipe(self, duplex=True):
        """Two connected Connection ends."""
        from .connection import Pipe

        return Pipe(duplex)

    def Lock(self):
        """A process-shared lock."""
        from .synchronize import Lock

        return Lock(ctx=self)

    def RLock(self):
        """A process-shared recursive lock."""
        from .synchronize import RLock

        return RLock(ctx=self)

    def Semaphore(self, value=1):
        """A process-shared semaphore."""
        from .synchronize import Semaphore

        return Semaphore(value, ctx=self)

    def BoundedSemaphore(self, value=1):
        """A process-shared semaphore bounded by its initial value."""
        from .synchronize import BoundedSemaphore

        return BoundedSemaphore(value, ctx=self)

    def Event(self):
        """A process-shared event."""
        from .synchronize import Event

        return Event(ctx=self)

    def Condition(self, lock=None):
        """A process-shared condition variable over ``lock`` (a new RLock if None)."""
        from .synchronize import Condition

        return Condition(lock, ctx=self)

    def Value(self, typecode_or_type, *args, lock=True):
        """A shared number with a lock (numbers and single bytes on the core)."""
        from .sharedctypes import Value

        return Value(typecode_or_type, *args, lock=lock, ctx=self)

    def Array(self, typecode_or_type, size_or_initializer, *, lock=True):
        """A shared array with a lock (numbers and bytes on the core)."""
        from .sharedctypes import Array

        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self)

    def RawValue(self, typecode_or_type, *args):
        """A shared number without a lock."""
        from .sharedctypes import RawValue

        return RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type, size_or_initializer):
        """A shared array without a lock."""
        from .sharedctypes import RawArray

        return RawArray(typecode_or_type, size_or_initializer)

    def Pool(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None):
        """A pool of worker processes on this package's queues (``multiproc.pool``)."""
        from .pool import Pool

        return Pool(processes, initializer, initargs, maxtasksperchild, context=self.get_context())

    def _stdlib_context(self):
        """The stdlib's context of this context's start method."""
        return _std._concrete_contexts[self.get_start_method()]

    def get_context(self, method=None):
        """This package's context for ``method`` (this one for ``None``)."""
        if method is None:
            return self
        try:
            ctx = _CONCRETE[method]
        except KeyError:
            raise ValueError("cannot find context for %r" % method) from None
        ctx._check_available()
        return ctx


class ForkContext(_Ours, _std.ForkContext):
    """The fork start method with this package's objects."""


class SpawnContext(_Ours, _std.SpawnContext):
    """The spawn start method with this package's objects."""


class ForkServerContext(_Ours, _std.ForkServerContext):
    """The forkserver start method with this package's objects."""


class DefaultContext(_Ours, _std.BaseContext):
    """The context of the stdlib's default start method, with this package's objects."""

    Process = _std.Process

    def get_context(self, method=None):
        if method is None:
            method = _std._default_context.get_start_method()
        return _Ours.get_context(self, method)

    def get_start_method(self, allow_none=False):
        return _std._default_context.get_start_method(allow_none)

    def set_start_method(self, method, force=False):
        _std._default_context.set_start_method(method, force)

    def get_all_start_methods(self):
        return _std._default_context.get_all_start_methods()

    def _stdlib_context(self):
        return _std._default_context


BaseContext = _std.BaseContext

_CONCRETE = {
    "fork": ForkContext(),
    "spawn": SpawnContext(),
    "forkserver": ForkServerContext(),
}

_default_context = DefaultContext()
