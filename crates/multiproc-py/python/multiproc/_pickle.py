"""How values and objects travel: pickles of protocol 5 made by the stdlib's
ForkingPickler (so handles inside items reduce as they do in the stdlib), and the
rebuilding of this package's objects from a descriptor handed over with DupFd."""

import os

from multiprocessing.reduction import DupFd, ForkingPickler

PROTOCOL = 5


def dumps(obj):
    """The pickle of ``obj`` (a memoryview of the pickled bytes)."""
    return ForkingPickler.dumps(obj, PROTOCOL)


loads = ForkingPickler.loads


def reduce_by_fd(obj, fd, *extra):
    """``__reduce__`` for an object that the child rebuilds as ``type(obj)(*extra, fd=...)``
    from a duplicate of ``fd``, handed over as the stdlib hands over its own handles."""
    return (_rebuild, (type(obj), DupFd(fd), extra))


def _rebuild(cls, dupfd, extra):
    fd = dupfd.detach()
    try:
        return cls(*extra, fd=fd)
    finally:
        # The object holds its own duplicate.
        os.close(fd)
