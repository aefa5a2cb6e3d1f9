"""multiproc: Python's ``multiprocessing`` on a Rust core.

``import multiproc as multiprocessing`` works for the names below. Which objects are
this package's and which are still the stdlib's is listed in ``multiproc.context``
(``OURS``, ``STDLIB_FOR_NOW``, ``STDLIB_BY_DESIGN``) and here:

- this package's, on the Rust core: Queue, SimpleQueue, JoinableQueue, Pipe
  (``multiproc.connection.Connection``), Lock, RLock, Semaphore, BoundedSemaphore, Event,
  Condition, and Value, Array, RawValue, RawArray of numbers and bytes (other ctypes
  types are still the stdlib's: see ``multiproc.sharedctypes``), and Pool (the stdlib's
  ``Pool`` class on this package's queues, which survives a worker's death: see
  ``multiproc.pool``);
- still the stdlib's, for now: Barrier (which waits on this package's Condition),
  Manager, ``shared_memory``, ``connection.Listener`` and ``Client`` (and
  ``connection.wait`` is the stdlib's, made aware of messages our connections read ahead);
- the stdlib's on purpose: Process and its start methods, current_process,
  active_children, cpu_count, set_start_method, get_start_method and the rest of the
  process machinery.

Every context (``get_context("spawn" | "fork" | "forkserver")``) subclasses the stdlib's
and returns this package's objects for the names above.
"""

import multiprocessing as _stdlib

from . import connection, context, pool, queues, shared_memory, sharedctypes, synchronize
from .context import OURS, STDLIB_BY_DESIGN, STDLIB_FOR_NOW

__all__ = [name for name in dir(context._default_context) if not name.startswith("_")]
globals().update((name, getattr(context._default_context, name)) for name in __all__)

# The stdlib's exceptions, so ``except multiproc.TimeoutError`` and the stdlib's agree.
ProcessError = _stdlib.ProcessError
BufferTooShort = _stdlib.BufferTooShort
TimeoutError = _stdlib.TimeoutError
AuthenticationError = _stdlib.AuthenticationError
