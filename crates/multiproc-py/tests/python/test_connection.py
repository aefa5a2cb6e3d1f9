"""Pipe and Connection: the stdlib's methods and exceptions."""

import array
import pickle
import threading

import pytest

import multiproc
from multiproc.connection import Connection

BOUND = 60.0


def test_duplex_pipe_sends_objects_both_ways():
    a, b = multiproc.Pipe()
    a.send({"x": [1, 2, 3]})
    assert b.recv() == {"x": [1, 2, 3]}
    b.send(("back", None))
    assert a.recv() == ("back", None)
    assert a.readable and a.writable


def test_one_way_pipe_has_directions():
    r, w = multiproc.Pipe(duplex=False)
    assert r.readable and not r.writable
    assert w.writable and not w.readable
    w.send(1)
    assert r.recv() == 1
    with pytest.raises(OSError):
        r.send(2)
    with pytest.raises(OSError):
        w.recv()


def test_send_bytes_with_offset_and_size():
    a, b = multiproc.Pipe()
    a.send_bytes(b"abcdef", 2, 3)
    assert b.recv_bytes() == b"cde"
    a.send_bytes(array.array("i", [1, 2, 3]))
    assert b.recv_bytes() == array.array("i", [1, 2, 3]).tobytes()
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", 4)
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", 1, 5)
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", -1)


def test_recv_bytes_maxlength():
    a, b = multiproc.Pipe()
    a.send_bytes(b"x" * 100)
    with pytest.raises(OSError):
        b.recv_bytes(10)
    with pytest.raises(ValueError):
        b.recv_bytes(-1)


def test_recv_bytes_into_and_buffer_too_short():
    a, b = multiproc.Pipe()
    a.send_bytes(b"hello")
    buf = bytearray(10)
    assert b.recv_bytes_into(buf, 3) == 5
    assert buf == b"\0\0\0hello\0\0"
    a.send_bytes(b"too long for it")
    with pytest.raises(multiproc.BufferTooShort) as info:
        b.recv_bytes_into(bytearray(4))
    assert info.value.args[0] == b"too long for it"


def test_poll_with_and_without_timeout():
    a, b = multiproc.Pipe()
    assert not b.poll()
    assert not b.poll(0.05)
    a.send(1)
    assert b.poll(BOUND)
    assert b.poll(None)
    assert b.recv() == 1


def test_eof_after_the_other_end_closes():
    a, b = multiproc.Pipe()
    a.send("last")
    a.close()
    assert b.recv() == "last"
    with pytest.raises(EOFError):
        b.recv()


def test_closed_connection_raises_os_error():
    a, b = multiproc.Pipe()
    a.close()
    assert a.closed
    for call in (lambda: a.send(1), a.recv, a.poll, a.fileno):
        with pytest.raises(OSError):
            call()
    a.close()  # twice is fine


def test_fileno_is_a_real_descriptor():
    import os

    a, b = multiproc.Pipe()
    assert os.fstat(a.fileno()) is not None


def test_talks_to_a_stdlib_connection():
    import multiprocessing
    import os

    ours, theirs_fd = multiproc.Pipe()
    theirs = multiprocessing.connection.Connection(os.dup(theirs_fd.fileno()))
    theirs_fd.close()
    ours.send([1, "two"])
    assert theirs.recv() == [1, "two"]
    theirs.send_bytes(b"raw")
    assert ours.recv_bytes() == b"raw"
    theirs.close()


def test_context_manager_closes():
    a, b = multiproc.Pipe()
    with a:
        pass
    assert a.closed


def test_unpicklable_message_is_not_sent():
    a, b = multiproc.Pipe()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        a.send(threading.Lock())  # not even cloudpickle pickles a thread lock
    a.send("ok")
    assert b.recv() == "ok"


def test_wait_sees_messages_read_ahead():
    from multiproc.connection import wait

    a, b = multiproc.Pipe()
    other_a, other_b = multiproc.Pipe()
    a.send("first")
    a.send("second")
    assert b.recv() == "first"  # may read "second" ahead into the connection's buffer
    assert wait([b, other_b], timeout=BOUND) == [b]
    assert b.recv() == "second"
    assert wait([b, other_b], timeout=0.05) == []
    other_a.send(1)
    assert wait([b, other_b], timeout=BOUND) == [other_b]
