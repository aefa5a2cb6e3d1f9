"""Still the stdlib's ``multiprocessing.shared_memory``, re-exported until the Rust core's
SharedMemory and ShareableList are bound here (every name of it, private ones included,
is the stdlib's)."""

import multiprocessing.shared_memory as _stdlib
from multiprocessing.shared_memory import *  # noqa: F401,F403  (still the stdlib's)
from multiprocessing.shared_memory import __all__  # noqa: F401


def __getattr__(name):
    """The stdlib's module for the names a star import leaves out."""
    try:
        return getattr(_stdlib, name)
    except AttributeError:
        raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name)) from None
