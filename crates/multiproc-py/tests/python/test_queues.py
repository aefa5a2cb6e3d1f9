"""Queue, SimpleQueue and JoinableQueue in one process: the stdlib's methods and
exceptions."""

import queue
import threading

import pytest

import multiproc

BOUND = 60.0


def test_put_get_keeps_order_and_values():
    q = multiproc.Queue()
    items = [None, True, 1, 2.5, "text", b"bytes", [1, 2], (3, 4), {"k": "v"}, {1, 2}]
    for item in items:
        q.put(item)
    assert [q.get(timeout=BOUND) for _ in items] == items


def test_large_item_travels_whole():
    q = multiproc.Queue()
    big = bytes(range(256)) * 40_000  # 10 MB: more than the ring holds inline
    q.put(big)
    assert q.get(timeout=BOUND) == big


def test_get_on_empty_queue_raises_empty():
    q = multiproc.Queue()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get(True, -1)


def test_put_on_full_queue_raises_full():
    q = multiproc.Queue(2)
    q.put(1)
    q.put_nowait(2)
    assert q.full()
    assert q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert q.get() == 1
    assert not q.full()


def test_qsize_empty_and_maxsize():
    q = multiproc.Queue()
    assert q.empty() and q.qsize() == 0 and not q.full()
    q.put("x")
    assert not q.empty() and q.qsize() == 1
    assert multiproc.Queue(5).maxsize == 5


def test_close_is_local_and_later_calls_raise_value_error():
    q = multiproc.Queue()
    other = multiproc.queues.Queue(fd=q.export_fd())
    q.put(1)
    q.close()
    with pytest.raises(ValueError):
        q.put(2)
    with pytest.raises(ValueError):
        q.get()
    q.join_thread()
    # Other handles on the same ring go on.
    other.put(3)
    assert other.get(timeout=BOUND) == 1
    assert other.get(timeout=BOUND) == 3


def test_join_thread_needs_close_and_cancel_join_thread_is_accepted():
    q = multiproc.Queue()
    with pytest.raises(AssertionError):
        q.join_thread()
    q.cancel_join_thread()
    q.close()
    q.join_thread()


def test_unpicklable_item_raises_and_leaves_queue_usable():
    q = multiproc.Queue()
    with pytest.raises(TypeError):
        q.put(threading.Lock())  # not even cloudpickle pickles a thread lock
    q.put("after")
    assert q.get(timeout=BOUND) == "after"


def test_simple_queue():
    q = multiproc.SimpleQueue()
    assert q.empty()
    q.put(("a", 1))
    assert not q.empty()
    assert q.get() == ("a", 1)
    q.close()
    with pytest.raises(ValueError):
        q.put(1)


def test_joinable_queue_task_done_and_join():
    q = multiproc.JoinableQueue()
    for i in range(3):
        q.put(i)
    done = []

    def worker():
        for _ in range(3):
            done.append(q.get(timeout=BOUND))
            q.task_done()

    t = threading.Thread(daemon=True, target=worker)
    t.start()
    q.join()
    t.join(BOUND)
    assert done == [0, 1, 2]
    with pytest.raises(ValueError):
        q.task_done()


def test_blocked_get_is_woken_by_a_put_from_another_thread():
    q = multiproc.Queue()
    got = []
    t = threading.Thread(daemon=True, target=lambda: got.append(q.get(timeout=BOUND)))
    t.start()
    q.put("wake")
    t.join(BOUND)
    assert got == ["wake"]


def test_items_pickle_as_forking_pickler_pickles_them():
    from multiprocessing.reduction import ForkingPickler, register

    from multiproc._pickle import dumps

    class Custom:
        pass

    register(Custom, lambda c: (str, ("reduced by a registered reducer",)))
    item = {"k": [1, 2.5, b"b", Custom()]}
    assert bytes(dumps(item)) == bytes(ForkingPickler.dumps(item, 5))
    q = multiproc.Queue()
    q.put(Custom())
    assert q.get(timeout=BOUND) == "reduced by a registered reducer"
