"""Every object passes to a child started by the stdlib's Process under spawn, fork and
forkserver (the ``ctx`` fixture), and works there on the same shared object."""

import multiprocessing
import queue

import multiproc

from conftest import BOUND, run_child


def _queue_child(q, reply):
    reply.put(("child got", q.get(timeout=BOUND)))


def test_queue(ctx):
    q, reply = ctx.Queue(), ctx.Queue()
    q.put([1, 2, 3])
    run_child(ctx, _queue_child, q, reply)
    assert reply.get(timeout=BOUND) == ("child got", [1, 2, 3])


def _simple_queue_child(q):
    q.put("from child")


def test_simple_queue(ctx):
    q = ctx.SimpleQueue()
    run_child(ctx, _simple_queue_child, q)
    assert q.get() == "from child"


def _joinable_child(q):
    for _ in range(3):
        q.get(timeout=BOUND)
        q.task_done()


def test_joinable_queue(ctx):
    q = ctx.JoinableQueue()
    for i in range(3):
        q.put(i)
    p = ctx.Process(target=_joinable_child, args=(q,))
    p.start()
    q.join()
    p.join(BOUND)
    assert p.exitcode == 0


def _connection_child(conn, oneway):
    conn.send(conn.recv() * 2)
    oneway.send_bytes(b"one way")


def test_pipe_ends(ctx):
    a, b = ctx.Pipe()
    r, w = ctx.Pipe(duplex=False)
    a.send(21)
    run_child(ctx, _connection_child, b, w)
    assert a.recv() == 42
    assert r.recv_bytes() == b"one way"


def _lock_child(lock, flag):
    # The parent holds the lock: this acquire must fail, then the release below is
    # the parent's lock (any process may release a Lock).
    flag.put(lock.acquire(timeout=0.05))
    lock.release()


def test_lock(ctx):
    lock, flag = ctx.Lock(), ctx.Queue()
    lock.acquire()
    run_child(ctx, _lock_child, lock, flag)
    assert flag.get(timeout=BOUND) is False
    assert lock.acquire(False)  # released by the child
    lock.release()


def _rlock_child(rlock, flag):
    flag.put(rlock.acquire(timeout=0.05))


def test_rlock(ctx):
    rlock, flag = ctx.RLock(), ctx.Queue()
    with rlock:
        run_child(ctx, _rlock_child, rlock, flag)
    assert flag.get(timeout=BOUND) is False


def _semaphore_child(sem, bounded):
    sem.release()
    bounded.acquire()


def test_semaphores(ctx):
    sem, bounded = ctx.Semaphore(0), ctx.BoundedSemaphore(2)
    run_child(ctx, _semaphore_child, sem, bounded)
    assert sem.get_value() == 1
    assert bounded.get_value() == 1


def _event_child(event):
    event.set()


def test_event(ctx):
    event = ctx.Event()
    run_child(ctx, _event_child, event)
    assert event.wait(BOUND)


def test_objects_travel_through_a_queue_too():
    import multiproc

    q = multiproc.Queue()
    inner, lock = multiproc.Queue(), multiproc.Lock()
    q.put((inner, lock))
    inner2, lock2 = q.get(timeout=BOUND)
    inner2.put("same ring")
    assert inner.get(timeout=BOUND) == "same ring"
    lock2.acquire()
    assert not lock.acquire(False)
    lock.release()


def test_stdlib_process_and_context_types(ctx):
    assert isinstance(ctx, multiprocessing.context.BaseContext)
    assert ctx.get_start_method() in ("spawn", "fork", "forkserver")
    assert issubclass(ctx.Process, multiprocessing.process.BaseProcess)
    assert isinstance(ctx.Queue(), type(ctx.get_context().Queue()))
    try:
        ctx.Queue().get(timeout=0.01)
    except queue.Empty:
        pass


def _condition_child(cond, state):
    with cond:
        state.put("waiting")
        cond.wait(BOUND)
        state.put("notified")


def test_condition(ctx):
    cond, state = ctx.Condition(), ctx.Queue()
    p = ctx.Process(target=_condition_child, args=(cond, state))
    p.start()
    assert state.get(timeout=BOUND) == "waiting"
    # The child holds the lock until it waits: taking it here means it is waiting.
    with cond:
        cond.notify()
    assert state.get(timeout=BOUND) == "notified"
    p.join(BOUND)
    assert p.exitcode == 0


def test_pool_is_ours_and_works(ctx):
    with ctx.Pool(2) as pool:
        assert isinstance(pool, multiproc.pool.Pool)
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]


def _value_child(value, array, raw_value, raw_array, chars, wide):
    with value.get_lock():
        value.value += 1
    array[0] = 7
    raw_value.value = 2.5
    raw_array[1:3] = [True, True]
    chars.value = b"child"
    wide.value = "w"


def test_values_and_arrays(ctx):
    import ctypes

    value, array = ctx.Value("i", 1), ctx.Array("i", 3)
    raw_value, raw_array = ctx.RawValue(ctypes.c_double), ctx.RawArray("?", 3)
    chars = ctx.Array("c", 8)
    wide = ctx.Value("u", "a")  # still the stdlib's
    run_child(ctx, _value_child, value, array, raw_value, raw_array, chars, wide)
    assert value.value == 2
    assert array[:] == [7, 0, 0]
    assert raw_value.value == 2.5
    assert list(raw_array) == [False, True, True]
    assert chars.value == b"child"
    assert wide.value == "w"


def _barrier_child(barrier, out):
    out.put(barrier.wait(BOUND))


def test_barrier(ctx):
    barrier, out = ctx.Barrier(2), ctx.Queue()
    p = ctx.Process(target=_barrier_child, args=(barrier, out))
    p.start()
    mine = barrier.wait(BOUND)
    assert sorted([mine, out.get(timeout=BOUND)]) == [0, 1]
    p.join(BOUND)
    assert p.exitcode == 0
