"""Pool: the stdlib's API on this package's queues, under every start method, and a
worker killed mid-task (SIGKILL, ``os._exit``) failing that task with WorkerLostError
while the other tasks complete and the pool goes on (the stdlib hangs, bpo-22393)."""

import functools
import os
import signal
import time

import pytest

import multiproc
from multiproc.pool import WorkerLostError

from conftest import BOUND

#: Set by ``_init`` in each worker: a queue to report to the test.
_REPORT = None


def _init(report):
    global _REPORT
    _REPORT = report


def _sqr(x):
    return x * x


def _mul(x, y):
    return x * y


def _raise_value_error(x):
    raise ValueError("bad {}".format(x))


def _hang(tag):
    """Reports (tag, pid) and waits to be killed (at most BOUND seconds)."""
    _REPORT.put((tag, os.getpid()))
    time.sleep(BOUND)
    return "not killed"


def _die_on(x, victim, how):
    if x == victim:
        if how == "exit":
            os._exit(7)
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def _pid(_):
    return os.getpid()


def test_the_stdlibs_api(ctx):
    with ctx.Pool(2) as pool:
        assert isinstance(pool, multiproc.pool.Pool)
        assert pool.apply(_sqr, (5,)) == 25
        assert pool.map(_sqr, range(10)) == [x * x for x in range(10)]
        assert pool.map(_sqr, range(100), chunksize=7) == [x * x for x in range(100)]
        assert pool.starmap(_mul, [(1, 2), (3, 4)]) == [2, 12]
        assert pool.starmap_async(_mul, [(5, 6)]).get(BOUND) == [30]
        assert list(pool.imap(_sqr, range(20), chunksize=3)) == [x * x for x in range(20)]
        assert sorted(pool.imap_unordered(_sqr, range(20))) == [x * x for x in range(20)]
        assert pool.map_async(_sqr, []).get(BOUND) == []
        got = []
        pool.map_async(_sqr, [3], callback=got.append).wait(BOUND)
        assert got == [[9]]
        errors = []
        r = pool.apply_async(_raise_value_error, (1,), error_callback=errors.append)
        with pytest.raises(ValueError, match="bad 1"):
            r.get(BOUND)
        assert isinstance(errors[0], ValueError)
    pool.join()
    with pytest.raises(ValueError):
        pool.map(_sqr, [1])


def test_close_and_join_wait_for_pending_tasks(ctx):
    pool = ctx.Pool(2)
    results = [pool.apply_async(_sqr, (i,)) for i in range(30)]
    pool.close()
    pool.join()
    assert [r.get(0) for r in results] == [i * i for i in range(30)]


def test_initializer_and_maxtasksperchild(ctx):
    report = ctx.Queue()
    pool = ctx.Pool(2, initializer=_init, initargs=(report,), maxtasksperchild=3)
    try:
        pids = pool.map_async(_pid, range(12), chunksize=1).get(BOUND)
        # Each worker ran at most 3 tasks, so at least 4 workers ran them.
        assert len(set(pids)) >= 4
        assert max(pids.count(p) for p in set(pids)) <= 3
    finally:
        pool.terminate()
        pool.join()


def test_terminate_stops_long_tasks(ctx):
    pool = ctx.Pool(2)
    pool.map_async(time.sleep, [BOUND] * 50, chunksize=1)
    start = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - start < BOUND
    assert all(p.exitcode is not None for p in pool._pool)


def _kill_running_task(pool, report):
    """Starts a task that hangs, SIGKILLs its worker; the task's result and the pid."""
    victim = pool.apply_async(_hang, ("victim",))
    tag, pid = report.get(timeout=BOUND)
    assert tag == "victim"
    os.kill(pid, signal.SIGKILL)
    return victim, pid


def test_worker_killed_mid_task_fails_that_task_and_the_pool_goes_on(ctx):
    report = ctx.Queue()
    pool = ctx.Pool(2, initializer=_init, initargs=(report,))
    try:
        before = pool.map_async(_sqr, range(10), chunksize=1)
        victim, pid = _kill_running_task(pool, report)
        with pytest.raises(WorkerLostError) as info:
            victim.get(BOUND)
        error = info.value
        assert isinstance(error, multiproc.ProcessError)
        assert error.pid == pid and error.exitcode == -signal.SIGKILL
        assert str(pid) in str(error) and "SIGKILL" in str(error)
        assert before.get(BOUND) == [x * x for x in range(10)]
        # The pool replaced the worker and goes on.
        after = pool.map_async(_sqr, range(50), chunksize=1).get(BOUND)
        assert after == [x * x for x in range(50)]
        assert pool.apply_async(_sqr, (9,)).get(BOUND) == 81
        deadline = time.monotonic() + BOUND
        while not (len(pool._pool) == 2 and all(p.is_alive() for p in pool._pool)):
            assert time.monotonic() < deadline, "the pool did not replace its worker"
            time.sleep(0.01)
        assert pid not in [p.pid for p in pool._pool]
    finally:
        pool.terminate()
        pool.join()


@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_map_raises_instead_of_hanging_when_a_worker_dies(ctx, how):
    pool = ctx.Pool(2)
    try:
        with pytest.raises(WorkerLostError) as info:
            pool.map_async(functools.partial(_die_on, victim=5, how=how), range(10), 1).get(BOUND)
        expected = -signal.SIGKILL if how == "sigkill" else 7
        assert info.value.exitcode == expected
        # imap: the lost item raises in its place; the others arrive.
        it = pool.imap(functools.partial(_die_on, victim=1, how=how), [0, 1, 2])
        assert it.next(BOUND) == 0
        with pytest.raises(WorkerLostError):
            it.next(BOUND)
        assert it.next(BOUND) == 4
        # starmap with chunks: the chunk that held the victim fails the call.
        args = [(x, 3, how) for x in range(8)]
        with pytest.raises(WorkerLostError):
            pool.starmap_async(_die_on, args, chunksize=2).get(BOUND)
        assert pool.map_async(_sqr, range(40)).get(BOUND) == [x * x for x in range(40)]
    finally:
        pool.terminate()
        pool.join()


def test_apply_async_get_with_timeout_does_not_hang_on_a_death(ctx):
    report = ctx.Queue()
    pool = ctx.Pool(1, initializer=_init, initargs=(report,))
    try:
        victim, _ = _kill_running_task(pool, report)
        # A task queued behind the victim on the same (only) worker runs on its
        # replacement.
        behind = pool.apply_async(_sqr, (4,))
        with pytest.raises(WorkerLostError):
            victim.get(BOUND)
        assert behind.get(BOUND) == 16
    finally:
        pool.terminate()
        pool.join()


def test_every_worker_killed_repeatedly(ctx):
    report = ctx.Queue()
    pool = ctx.Pool(2, initializer=_init, initargs=(report,))
    try:
        for _ in range(3):
            victim, _ = _kill_running_task(pool, report)
            with pytest.raises(WorkerLostError):
                victim.get(BOUND)
        assert pool.map_async(_sqr, range(10)).get(BOUND) == [x * x for x in range(10)]
        pool.close()
        pool.join()
    finally:
        pool.terminate()
        pool.join()


def test_close_then_a_death_still_finishes(ctx):
    report = ctx.Queue()
    pool = ctx.Pool(2, initializer=_init, initargs=(report,))
    victim = pool.apply_async(_hang, ("victim",))
    rest = pool.map_async(_sqr, range(10), chunksize=1)
    pool.close()
    tag, pid = report.get(timeout=BOUND)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        victim.get(BOUND)
    assert rest.get(BOUND) == [x * x for x in range(10)]
    pool.join()


def _failing_initializer():
    raise RuntimeError("initializer fails on purpose")


def test_workers_that_keep_dying_at_start_fail_the_tasks_instead_of_hanging(ctx):
    """The stdlib's pool starts new workers for ever and its map never returns."""
    pool = ctx.Pool(2, initializer=_failing_initializer)
    try:
        with pytest.raises(WorkerLostError, match="before running any task"):
            pool.map_async(_sqr, range(4)).get(BOUND)
    finally:
        pool.terminate()
        pool.join()


_INTERRUPTED_MAP = """
import signal, sys, time
import multiproc

if __name__ == "__main__":
    # As when run from a terminal, even if this test runs with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pool = multiproc.get_context(sys.argv[2]).Pool(2)
    with open(sys.argv[1], "w") as f:
        f.write(" ".join(str(p.pid) for p in pool._pool))
    pool.map(time.sleep, [60] * 4, chunksize=1)
"""


def _ended(pid):
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_ctrl_c_interrupts_map_and_leaves_no_worker_behind(tmp_path, method):
    import subprocess
    import sys

    script = tmp_path / "interrupted_map.py"
    script.write_text(_INTERRUPTED_MAP)
    pids = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, str(script), str(pids), method],
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + BOUND
        while not (pids.exists() and pids.read_text()):
            assert time.monotonic() < deadline, "the pool did not start"
            time.sleep(0.01)
        workers = [int(p) for p in pids.read_text().split()]
        time.sleep(0.2)  # most likely inside map by now; earlier only makes it weaker
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=BOUND)
        assert b"KeyboardInterrupt" in err
        deadline = time.monotonic() + BOUND
        while not all(_ended(p) for p in workers):
            assert time.monotonic() < deadline, "a worker outlived the interrupted program"
            time.sleep(0.01)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the run
        except ProcessLookupError:
            pass
        proc.wait(BOUND)


def test_a_closure_runs_as_a_task_and_an_unpicklable_argument_fails_its_task(ctx):
    import threading

    k = 3
    with ctx.Pool(2) as pool:
        # By value through cloudpickle (installed in the test environments).
        assert pool.map(lambda x: x + k, range(5)) == [3, 4, 5, 6, 7]
        # Not even cloudpickle pickles a thread lock: that task fails, the pool goes on.
        bad = pool.apply_async(_sqr, (threading.Lock(),))
        with pytest.raises(TypeError):
            bad.get(BOUND)
        assert pool.apply_async(_sqr, (4,)).get(BOUND) == 16


def _a_lambda(_):
    return lambda: 42


def test_an_unpicklable_result_is_a_maybe_encoding_error_without_cloudpickle(monkeypatch):
    from multiproc.pool import MaybeEncodingError

    ctx = multiproc.get_context("fork")  # the workers inherit the missing cloudpickle
    monkeypatch.setitem(__import__("sys").modules, "cloudpickle", None)
    with ctx.Pool(1) as pool:
        with pytest.raises(MaybeEncodingError):
            pool.apply_async(_a_lambda, (0,)).get(BOUND)
        assert pool.apply_async(_sqr, (5,)).get(BOUND) == 25


def test_a_lambda_result_arrives_with_cloudpickle(ctx):
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_a_lambda, (0,)).get(BOUND)() == 42
