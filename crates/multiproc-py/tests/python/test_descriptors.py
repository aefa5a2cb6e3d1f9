"""Objects rebuilt from a descriptor (``fd=``, what a child does with the stdlib's
``DupFd``) accept their own kind of shared segment only: anything else is a clear
error, never a crash."""

import os
import tempfile

import pytest

import multiproc
from multiproc import _native
from multiproc.queues import Queue
from multiproc.synchronize import Event, Lock, Semaphore


def test_not_a_descriptor_is_a_value_error():
    with pytest.raises(ValueError):
        Lock(fd=-1)


def test_a_closed_descriptor_is_an_os_error():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        Queue(fd=r)


@pytest.mark.parametrize("make", [Queue, Lock, Event, lambda fd: _native.RawValue("i", fd=fd)])
def test_a_plain_file_or_pipe_is_refused(make):
    with tempfile.TemporaryFile() as f:
        f.truncate(1 << 16)
        with pytest.raises(RuntimeError, match="sealed"):
            make(fd=f.fileno()) if make in (Queue, Lock, Event) else make(f.fileno())
    r, w = os.pipe()
    try:
        with pytest.raises(RuntimeError):
            make(fd=r) if make in (Queue, Lock, Event) else make(r)
    finally:
        os.close(r)
        os.close(w)


def test_a_segment_of_another_kind_is_refused():
    lock, queue = multiproc.Lock(), multiproc.Queue()
    with pytest.raises(RuntimeError):
        Queue(fd=lock.export_fd())
    with pytest.raises(RuntimeError):
        Semaphore(fd=queue.export_fd())
    value = multiproc.RawValue("i", 1)
    with pytest.raises(RuntimeError):
        _native.RawValue("d", fd=value.export_fd())
    with pytest.raises(RuntimeError):
        _native.RawArray("i", fd=value.export_fd())


def test_the_callers_descriptor_stays_its_own():
    lock = multiproc.Lock()
    fd = os.dup(lock.export_fd())
    same = Lock(fd=fd)
    os.close(fd)  # the object holds its own duplicate
    same.acquire()
    assert not lock.acquire(False)
    same.release()
