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


class _Woken(Exception):
    pass


@pytest.mark.parametrize("name", list(_blocked_calls()[0]))
def test_another_thread_runs_while_a_call_blocks(name):
    """Once the main thread has entered the call, another thread takes 20 steps (each
    needs the GIL) and then ends the call with a signal: the call must have released the
    GIL, or the steps never happen and the fallback alarm fails the test."""
    calls, keep = _blocked_calls()
    call = calls[name]
    main = threading.main_thread().ident
    in_call = threading.Event()
    steps = []

    def stepper():
        in_call.wait(BOUND)
        while len(steps) < 20:
            steps.append(1)
            time.sleep(0.001)
        signal.pthread_kill(main, signal.SIGALRM)

    def on_alarm(*args):
        raise _Woken("by the other thread" if len(steps) == 20 else "by the fallback alarm")

    old = signal.signal(signal.SIGALRM, on_alarm)
    t = threading.Thread(daemon=True, target=stepper)
    t.start()
    try:
        signal.setitimer(signal.ITIMER_REAL, BOUND)
        with pytest.raises(_Woken) as woken:
            in_call.set()
            call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        t.join(BOUND)
    assert str(woken.value) == "by the other thread", name


@pytest.mark.parametrize("name", list(_blocked_calls()[0]))
def test_sigint_interrupts_a_blocked_call(name):
    calls, keep = _blocked_calls()
    call = calls[name]
    in_call = threading.Event()

    def interrupt():
        in_call.wait(BOUND)
        time.sleep(0.1)  # most likely blocked by now; earlier only makes the test weaker
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own SIGINT handler, even when the test run started with SIGINT ignored (a
    # shell's background job): otherwise the signal would never arrive.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        t = threading.Thread(daemon=True, target=interrupt)
        t.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            in_call.set()
            call()
        t.join(BOUND)
        assert time.monotonic() - started < BOUND
    finally:
        signal.signal(signal.SIGINT, old)
