"""Lock, RLock, Semaphore, BoundedSemaphore, Event and Condition in one process (and a
Condition shared with a child)."""

import threading

import pytest

import multiproc

BOUND = 60.0


def test_lock_acquire_release_and_timeouts():
    lock = multiproc.Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(timeout=0.05) is False
    assert lock.acquire(True, -1) is False
    lock.release()
    with pytest.raises(ValueError):
        lock.release()


def test_lock_is_released_by_another_thread():
    lock = multiproc.Lock()
    lock.acquire()
    t = threading.Thread(daemon=True, target=lock.release)
    t.start()
    t.join(BOUND)
    assert lock.acquire(timeout=BOUND)
    lock.release()


def test_lock_context_manager():
    lock = multiproc.Lock()
    with lock:
        assert not lock.acquire(False)
    assert lock.acquire(False)
    lock.release()


def test_rlock_is_recursive_and_owned_by_its_thread():
    rlock = multiproc.RLock()
    assert rlock.acquire() and rlock.acquire()
    other = []
    t = threading.Thread(daemon=True, target=lambda: other.append(rlock.acquire(timeout=0.05)))
    t.start()
    t.join(BOUND)
    assert other == [False]
    rlock.release()
    rlock.release()
    with pytest.raises(AssertionError):
        rlock.release()
    with rlock:
        with rlock:
            pass


def test_semaphore_counts():
    sem = multiproc.Semaphore(2)
    assert sem.get_value() == 2
    assert sem.acquire() and sem.acquire()
    assert sem.acquire(timeout=0.05) is False
    sem.release()
    assert sem.get_value() == 1
    sem.release()
    sem.release()  # unbounded
    assert sem.get_value() == 3
    with pytest.raises(ValueError):
        multiproc.Semaphore(-1)


def test_bounded_semaphore_refuses_to_grow():
    sem = multiproc.BoundedSemaphore(1)
    with pytest.raises(ValueError):
        sem.release()
    with sem:
        assert sem.get_value() == 0
    assert sem.get_value() == 1


def test_event_set_clear_wait():
    event = multiproc.Event()
    assert not event.is_set()
    assert event.wait(0.05) is False
    event.set()
    assert event.is_set()
    assert event.wait() is True
    assert event.wait(0) is True
    event.clear()
    assert not event.is_set()


def test_event_wakes_a_waiting_thread():
    event = multiproc.Event()
    woke = []
    t = threading.Thread(daemon=True, target=lambda: woke.append(event.wait(BOUND)))
    t.start()
    event.set()
    t.join(BOUND)
    assert woke == [True]


def test_condition_wait_notify_between_threads():
    cond = multiproc.Condition()
    with cond:
        assert cond.wait(0.05) is False  # nobody notifies: times out, holding the lock again
    with cond:
        pass  # and released it on leaving the block
    results = []

    def notified_waiter():
        with cond:
            results.append(cond.wait(BOUND))

    t = threading.Thread(daemon=True, target=notified_waiter)
    t.start()
    # Notify until the waiter has been woken (it may not be waiting yet at first).
    while t.is_alive():
        with cond:
            cond.notify()
        t.join(0.01)
    assert results == [True]


def test_condition_wait_for_predicate_and_timeout():
    cond = multiproc.Condition(multiproc.Lock())
    state = []
    with cond:
        assert cond.wait_for(lambda: state, timeout=0.05) == []

    def setter():
        with cond:
            state.append(1)
            cond.notify_all()

    t = threading.Thread(daemon=True, target=setter)
    with cond:
        t.start()
        assert cond.wait_for(lambda: state, timeout=BOUND) == [1]
    t.join(BOUND)


def test_condition_needs_the_lock():
    cond = multiproc.Condition()
    with pytest.raises(AssertionError):
        cond.wait(0)
    with pytest.raises(AssertionError):
        cond.notify()
    with pytest.raises(TypeError):
        multiproc.Condition(object())


def test_condition_over_rlock_releases_every_level_while_waiting():
    lock = multiproc.RLock()
    cond = multiproc.Condition(lock)
    got = []
    with cond:
        with cond:
            t = threading.Thread(daemon=True, target=lambda: got.append(lock.acquire(timeout=BOUND)) or lock.release())
            t.start()
            cond.wait(0.3)  # both levels released while waiting: the thread gets the lock
            t.join(BOUND)
    assert got == [True]


def test_barrier_over_our_condition():
    barrier = multiproc.Barrier(2)
    assert isinstance(barrier._cond, multiproc.synchronize.Condition)
    out = []
    t = threading.Thread(daemon=True, target=lambda: out.append(barrier.wait(BOUND)))
    t.start()
    out.append(barrier.wait(BOUND))
    t.join(BOUND)
    assert sorted(out) == [0, 1]


def _condition_waiters(cond, count, sleeping, woken):
    """Starts ``count`` threads that each wait once on ``cond`` (no timeout) and then
    release ``woken``; returns once all of them are waiting."""

    def waiter():
        with cond:
            sleeping.release()
            cond.wait()
            woken.release()

    threads = [threading.Thread(daemon=True, target=waiter) for _ in range(count)]
    for t in threads:
        t.start()
    for _ in threads:
        assert sleeping.acquire(timeout=BOUND)
    # Each waiter released `sleeping` holding the lock: once this acquire returns, it
    # has released the lock inside wait().
    with cond:
        pass
    return threads


def _woken_now(woken, expected):
    """Takes ``expected`` units of ``woken`` (each within the bound), then checks that no
    further one comes within a short while."""
    for _ in range(expected):
        assert woken.acquire(timeout=BOUND)
    assert not woken.acquire(timeout=0.3), "more waiters woke than were notified"


def test_condition_notify_n_wakes_exactly_n_waiters():
    cond = multiproc.Condition()
    sleeping, woken = multiproc.Semaphore(0), multiproc.Semaphore(0)
    threads = _condition_waiters(cond, 5, sleeping, woken)
    with cond:
        cond.notify()
    _woken_now(woken, 1)
    with cond:
        cond.notify(2)
    _woken_now(woken, 2)
    with cond:
        cond.notify_all()
    _woken_now(woken, 2)
    for t in threads:
        t.join(BOUND)
        assert not t.is_alive()


def test_condition_notify_does_not_wake_a_later_waiter():
    # The notifier waits right after notifying: the notification is the earlier
    # waiter's, not its own (a wait that began after it).
    cond = multiproc.Condition()
    sleeping, woken = multiproc.Semaphore(0), multiproc.Semaphore(0)
    threads = _condition_waiters(cond, 1, sleeping, woken)
    with cond:
        cond.notify()
        assert cond.wait(0.3) is False
    _woken_now(woken, 1)
    threads[0].join(BOUND)


def _notify_then_wait_for(cond, state):
    with cond:
        state.value = 0
        cond.notify()
        if not cond.wait_for(lambda: state.value == 1, timeout=BOUND):
            raise SystemExit(1)


def test_condition_notifier_in_a_child_wakes_the_parent(ctx):
    cond = ctx.Condition()
    state = ctx.Value("i", -1)
    p = ctx.Process(target=_notify_then_wait_for, args=(cond, state))
    with cond:
        p.start()
        assert cond.wait_for(lambda: state.value == 0, timeout=BOUND)
        state.value = 1
        cond.notify()
    p.join(BOUND)
    assert p.exitcode == 0
