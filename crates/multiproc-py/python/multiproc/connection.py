"""Pipe and Connection on the Rust core's Connection (CPython's framing, so either end may
also be a stdlib Connection). ``Listener`` and ``Client`` are still the stdlib's; ``wait``
is the stdlib's, first asking this package's connections for messages they have read
ahead (which ``select`` cannot see). Every other name of the stdlib's
``multiprocessing.connection`` (``families``, ``answer_challenge``...) is the stdlib's."""

import multiprocessing.connection as _stdlib
import os
import socket

from multiprocessing import BufferTooShort
from multiprocessing.connection import Client, Listener  # still the stdlib's

from . import _native
from ._pickle import DupFd, dumps, loads

__all__ = ["Connection", "Pipe", "Client", "Listener", "wait"]


def __getattr__(name):
    """The stdlib's ``multiprocessing.connection`` for the names this module lacks."""
    try:
        return getattr(_stdlib, name)
    except AttributeError:
        raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name)) from None


class Connection(_native.Connection):
    """``multiprocessing.connection.Connection``: ``Connection(fd, readable=True,
    writable=True)`` works on a duplicate of ``fd``."""

    __slots__ = ()

    def send(self, obj):
        """Sends the pickle of ``obj``."""
        self.send_bytes(dumps(obj))

    def recv(self):
        """Receives one pickled object."""
        return loads(self.recv_bytes())

    def send_bytes(self, buf, offset=0, size=None):
        """Sends ``size`` bytes of the bytes-like ``buf`` from ``offset``."""
        with memoryview(buf) as m:
            if m.itemsize > 1 or m.ndim != 1:
                m = m.cast("B")
            n = m.nbytes
            if offset < 0:
                raise ValueError("offset is negative")
            if n < offset:
                raise ValueError("buffer length < offset")
            if size is None:
                size = n - offset
            elif size < 0:
                raise ValueError("size is negative")
            elif offset + size > n:
                raise ValueError("buffer length < offset + size")
            _native.Connection.send_bytes(self, m[offset : offset + size])

    def recv_bytes_into(self, buf, offset=0):
        """Receives one message into the writable buffer ``buf`` at byte ``offset``;
        returns its size; ``BufferTooShort`` (holding the message) if it does not fit."""
        with memoryview(buf) as m:
            itemsize = m.itemsize
            bytesize = itemsize * len(m)
            if offset < 0:
                raise ValueError("negative offset")
            if offset > bytesize:
                raise ValueError("offset too large")
            data = self.recv_bytes()
            size = len(data)
            if bytesize < offset + size:
                raise BufferTooShort(data)
            m.cast("B")[offset : offset + size] = data
            return size

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()

    def __reduce__(self):
        return (_rebuild, (type(self), DupFd(self.fileno()), self.readable, self.writable))


def _rebuild(cls, dupfd, readable, writable):
    fd = dupfd.detach()
    try:
        return cls(fd, readable, writable)
    finally:
        os.close(fd)


def wait(object_list, timeout=None):
    """``multiprocessing.connection.wait``: the objects of ``object_list`` that are ready,
    waiting at most ``timeout`` seconds (``None``: as long as it takes)."""
    ready = [
        o
        for o in object_list
        if isinstance(o, Connection) and not o.closed and o.readable and o.poll(0)
    ]
    if ready:
        return ready
    return _stdlib.wait(object_list, timeout)


def Pipe(duplex=True):
    """A pair of connected ``Connection`` ends: both ways over a socket pair, or (with
    ``duplex=False``) ``(receiving end, sending end)`` over a pipe."""
    if duplex:
        s1, s2 = socket.socketpair()
        fds = (s1.detach(), s2.detach())
        directions = ((True, True), (True, True))
    else:
        fds = os.pipe()
        directions = ((True, False), (False, True))
    try:
        return tuple(Connection(fd, r, w) for fd, (r, w) in zip(fds, directions))
    finally:
        for fd in fds:
            os.close(fd)
