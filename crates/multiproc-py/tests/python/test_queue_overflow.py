"""An unbounded Queue never makes ``put`` wait, as the stdlib's does not: beyond what its
ring holds, the items wait in the putting process (its feeder thread), in order; the
process waits at exit until they are in the ring, unless it called
``cancel_join_thread``. Bounded queues still wait or raise ``queue.Full``."""

import queue
import time

import pytest

import multiproc
from conftest import BOUND

#: Items whose pickles fill the 4 MiB ring several times over.
MANY = 100_000
ITEM = b"x" * 64


def _put_many(q, n):
    for i in range(n):
        q.put((i, ITEM))


def _put_many_and_cancel(q, n):
    _put_many(q, n)
    q.cancel_join_thread()


def test_puts_beyond_the_ring_do_not_wait_and_come_out_in_order():
    q = multiproc.Queue()
    start = time.monotonic()
    _put_many(q, MANY)  # with nobody getting: the stdlib's put does not wait either
    assert time.monotonic() - start < BOUND
    got = [q.get(timeout=BOUND)[0] for _ in range(MANY)]
    assert got == list(range(MANY))
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)


def test_a_child_that_put_more_than_the_ring_holds_waits_at_exit_until_it_is_read(ctx):
    q = ctx.Queue()
    p = ctx.Process(target=_put_many, args=(q, MANY))
    p.start()
    try:
        got = [q.get(timeout=BOUND)[0] for _ in range(MANY)]
        p.join(BOUND)
        assert p.exitcode == 0
    finally:
        if p.exitcode is None:
            p.kill()
            p.join(BOUND)
    assert got == list(range(MANY))


def test_cancel_join_thread_lets_the_child_exit_without_its_buffer():
    ctx = multiproc.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_put_many_and_cancel, args=(q, MANY))
    p.start()
    p.join(BOUND)
    if p.exitcode is None:
        p.kill()
        p.join(BOUND)
        pytest.fail("the child waited at exit despite cancel_join_thread")
    assert p.exitcode == 0
    got = []
    try:
        while True:
            got.append(q.get(timeout=0.5)[0])
    except queue.Empty:
        pass
    # What reached the ring came whole and in order; the rest went with the child.
    assert 0 < len(got) < MANY
    assert got == list(range(len(got)))


def test_close_then_join_thread_waits_for_the_buffer():
    q = multiproc.Queue()
    reader = multiproc.queues.Queue(fd=q.export_fd())
    _put_many(q, MANY)
    q.close()
    got = []
    import threading

    t = threading.Thread(target=lambda: got.extend(reader.get(timeout=BOUND)[0] for _ in range(MANY)))
    t.start()
    q.join_thread()  # returns once every buffered item is in the ring
    t.join(BOUND)
    assert got == list(range(MANY))


def test_a_bounded_queue_still_raises_full():
    q = multiproc.Queue(3)
    for i in range(3):
        q.put(i)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
