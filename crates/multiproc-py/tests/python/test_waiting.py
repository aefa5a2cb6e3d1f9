"""Waits release the GIL, and Ctrl-C (SIGINT) interrupts them."""

import os
import signal
import threading
import time

import pytest

import multiproc

BOUND = 60.0


def _blocked_calls():
    """Calls that block until interrupted: a get on an empty queue, a put on a full one,
    an acquire of a held lock, a wait on an unset event, a recv with nothing sent."""
    empty = multiproc.Queue()
    full = multiproc.Queue(1)
    full.put(0)
    lock = multiproc.Lock()
    lock.acquire()
    sem = multiproc.Semaphore(0)
    event = multiproc.Event()
    a, b = multiproc.Pipe()
    jq = multiproc.JoinableQueue()
    jq.put(1)
    cond = multiproc.Condition()
    cond.acquire()
    barrier = multiproc.Barrier(2)
    keep = (a,)
    return {
        "Queue.get": empty.get,
        "Queue.put on a full queue": lambda: full.put(1),
        "Lock.acquire": lock.acquire,
        "Semaphore.acquire": sem.acquire,
        "Event.wait": event.wait,
        "Connection.recv": b.recv,
        "Connection.poll(None)": lambda: b.poll(None),
        "JoinableQueue.join": jq.join,
        "Condition.wait": cond.wait,
        "Barrier.wait": barrier.wait,
    }, keep


@pytest.mark.parametrize("name", list(_blocked_calls()[0]))
def test_another_thread_runs_while_a_call_blocks(name):
    calls, keep = _blocked_calls()
    call = calls[name]
    progress = []
    stop = threading.Event()

    def counter():
        while not stop.is_set() and len(progress) < 1000:
            progress.append(1)
            time.sleep(0.001)
        stop.set()

    t = threading.Thread(daemon=True, target=counter)
    t.start()
    # The main thread blocks in the call; the counter can only advance if the call
    # released the GIL. The counter ends the wait by raising in the main thread.
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("woken")))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(TimeoutError):
            call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        stop.set()
        t.join(BOUND)
    assert len(progress) > 10, "the other thread made no progress while {} blocked".format(name)


@pytest.mark.parametrize("name", list(_blocked_calls()[0]))
def test_sigint_interrupts_a_blocked_call(name):
    calls, keep = _blocked_calls()
    call = calls[name]
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        timer.cancel()
        timer.join(BOUND)
    assert time.monotonic() - started < 10
