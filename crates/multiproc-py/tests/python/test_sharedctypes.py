"""Value, Array, RawValue and RawArray in one process: ctypes' codes and types, locks,
slices, bytes arrays, and the types still left to the stdlib."""

import ctypes
import multiprocessing.sharedctypes
import threading

import pytest

import multiproc
from multiproc import sharedctypes

BOUND = 60.0


@pytest.mark.parametrize(
    "code, value",
    [("b", -5), ("B", 250), ("h", -300), ("H", 60000), ("i", -7), ("I", 7), ("l", -(2**40)),
     ("L", 2**40), ("q", -(2**62)), ("Q", 2**63), ("f", 1.5), ("d", 2.25), ("?", True)],
)
def test_value_of_every_code_round_trips(code, value):
    v = multiproc.Value(code, value)
    assert v.value == value
    assert isinstance(v.get_obj(), sharedctypes._NumberValue)
    raw = multiproc.RawValue(code)
    assert raw.value == (False if code == "?" else 0)


def test_ctypes_types_are_accepted():
    assert multiproc.Value(ctypes.c_double, 0.5).value == 0.5
    assert multiproc.RawValue(ctypes.c_int, 3).value == 3
    assert multiproc.Array(ctypes.c_long, [1, 2])[:] == [1, 2]


def test_value_lock_and_context_manager():
    v = multiproc.Value("i", 0)
    lock = v.get_lock()
    with v:
        assert not lock.acquire(timeout=0) or lock.release() is None  # an RLock: reentrant
    counter = multiproc.Value("q", 0)  # an RLock: ``value`` takes it again inside ``with``

    def bump():
        for _ in range(500):
            with counter.get_lock():
                counter.value += 1

    threads = [threading.Thread(daemon=True, target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert counter.value == 2000
    assert multiproc.Value("i", 5, lock=False).value == 5
    plain = multiproc.Value("i", 1, lock=multiproc.Lock())
    assert isinstance(plain.get_lock(), multiproc.synchronize.Lock)
    plain.value += 1
    assert plain.value == 2
    with pytest.raises(AttributeError):
        multiproc.Value("i", 0, lock=object())


def test_overflow_and_wrong_type_are_refused():
    v = multiproc.RawValue("b", 0)
    with pytest.raises(OverflowError):
        v.value = 1000
    with pytest.raises(TypeError):
        v.value = 1.5


def test_array_indexing_and_slices():
    a = multiproc.Array("i", range(10))
    assert len(a) == 10
    assert a[0] == 0 and a[-1] == 9
    assert a[2:5] == [2, 3, 4]
    assert a[::3] == [0, 3, 6, 9]
    a[2:5] = [20, 30, 40]
    a[::4] = [-1, -2, -3]
    assert a[:] == [-1, 1, 20, 30, -2, 5, 6, 7, -3, 9]
    assert list(a) == a[:]
    with pytest.raises(IndexError):
        a[10]
    with pytest.raises(IndexError):
        a[-11] = 0
    with pytest.raises(ValueError):
        a[0:2] = [1]
    assert multiproc.RawArray("d", 3)[:] == [0.0, 0.0, 0.0]


def test_bytes_arrays_and_values():
    a = multiproc.Array("c", b"hello\0xy")
    assert a.value == b"hello"
    assert a.raw == b"hello\0xy"
    assert a[1] == b"e"
    assert a[0:2] == b"he"
    assert list(a)[:2] == [b"h", b"e"]
    a.value = b"hi"
    assert a.value == b"hi"
    with pytest.raises(ValueError):
        a.value = b"much too long"
    c = multiproc.Value("c", b"x")
    assert c.value == b"x"
    c.value = b"y"
    assert c.get_obj().value == b"y"


def test_other_types_are_still_the_stdlibs():
    w = multiproc.Value("u", "z")
    assert isinstance(w, multiprocessing.sharedctypes.Synchronized)
    assert w.value == "z"

    class Point(ctypes.Structure):
        _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int)]

    p = multiproc.RawValue(Point, 1, 2)
    assert (p.x, p.y) == (1, 2)


def test_raw_objects_travel_through_a_queue():
    q = multiproc.Queue()
    v, a = multiproc.RawValue("i", 1), multiproc.RawArray("d", [0.5, 1.5])
    q.put((v, a))
    v2, a2 = q.get(timeout=BOUND)
    v2.value = 9
    a2[0] = 3.5
    assert v.value == 9
    assert a[:] == [3.5, 1.5]
