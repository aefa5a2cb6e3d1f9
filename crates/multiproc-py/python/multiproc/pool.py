"""``multiprocessing.Pool`` with its tasks and results on this package's queues, and a
worker that dies mid-task failing that task instead of hanging the pool.

``Pool`` subclasses the stdlib's ``multiprocessing.pool.Pool``: the public methods,
``ApplyResult``, ``MapResult``, ``IMapIterator``, the chunking and the error wrapping
(``RemoteTraceback``, ``MaybeEncodingError``) are the stdlib's own. What this module
replaces is the traffic and the bookkeeping under them:

- each worker has its own task queue (this package's ``Queue``, on the shared-memory
  ring); all workers send results through one shared result queue;
- the parent gives a worker at most a few tasks at a time (``_Dispatcher``), and keeps a
  copy of each until its result arrives, so it knows which tasks every worker holds;
- before running a task, a worker writes the task's number into a shared cell of its own
  (``RawValue``); a worker's results reach the parent in the order it ran its tasks.

When a worker dies (SIGKILL, ``os._exit``, a crash, anything), the thread that watches
the workers' sentinels puts a notice of the death on the result queue, behind every
result the worker sent. The thread that reads results then knows, from the shared cell,
whether the worker had started the oldest task it held: that task fails with
``WorkerLostError``, naming the worker, its pid and how it died; the tasks it held but
had not started go to other workers. A death at any instruction leaves one of the two
cases: the cell is written before the task's function is called, so a task is either
counted as started (and fails) or was never run (and runs elsewhere). A new worker
replaces the dead one, and the pool goes on. (The stdlib's pool waits for ever here,
bpo-22393.)

Differences from the stdlib's pool: a task's arguments must be picklable when the task
is given to a worker (as in the stdlib); a worker is given tasks a few at a time instead
of taking them from one shared pipe, which keeps every worker busy with short tasks and
leaves the next long task to whichever worker frees first, up to the few it already
holds. ``ThreadPool`` is the stdlib's.
"""

import collections
import os
import queue
import signal
import threading
import time
from multiprocessing import ProcessError, util
from multiprocessing import pool as _std
from multiprocessing.connection import wait
from multiprocessing.pool import (  # noqa: F401  (the stdlib's, re-exported)
    CLOSE,
    INIT,
    RUN,
    TERMINATE,
    ApplyResult,
    AsyncResult,
    ExceptionWithTraceback,
    IMapIterator,
    IMapUnorderedIterator,
    MapResult,
    MaybeEncodingError,
    RemoteTraceback,
    ThreadPool,
    mapstar,
    starmapstar,
)

from ._pickle import dumps

__all__ = ["Pool", "ThreadPool", "WorkerLostError", "AsyncResult"]

#: The most tasks a worker holds at once (one running, the rest waiting in its queue).
IN_FLIGHT = 4


class WorkerLostError(ProcessError):
    """The worker running a task died before it sent the task's result. ``pid``,
    ``name`` and ``exitcode`` (negative: killed by that signal) describe the worker."""

    def __init__(self, message, pid=None, name=None, exitcode=None):
        super().__init__(message)
        self.pid = pid
        self.name = name
        self.exitcode = exitcode

    def __reduce__(self):
        return (type(self), (self.args[0], self.pid, self.name, self.exitcode))


def _how(exitcode):
    """A death's exit code in words."""
    if exitcode is not None and exitcode < 0:
        try:
            return "was killed by {}".format(signal.Signals(-exitcode).name)
        except ValueError:
            return "was killed by signal {}".format(-exitcode)
    return "exited with code {}".format(exitcode)


def _worker(wid, inqueue, outqueue, started, initializer, initargs, maxtasks, wrap_exception):
    """A pool worker: runs the tasks of its own queue in order, writes each task's number
    into ``started`` before running it, and sends ``(wid, (success, value))`` per task."""
    put = outqueue.put
    get = inqueue.get
    if initializer is not None:
        initializer(*initargs)
    completed = 0
    while maxtasks is None or completed < maxtasks:
        try:
            task = get()
        except (EOFError, OSError, ValueError):
            util.debug("worker's queue is gone -- exiting")
            break
        except Exception as e:
            # The task could not be unpickled here: it fails, the worker goes on.
            completed += 1
            started.value = completed
            put((wid, (False, e)))
            continue
        if task is None:
            util.debug("worker got sentinel -- exiting")
            break
        completed += 1
        started.value = completed
        func, args, kwds = task
        try:
            result = (True, func(*args, **kwds))
        except Exception as e:
            if wrap_exception and func is not _std._helper_reraises_exception:
                e = ExceptionWithTraceback(e, e.__traceback__)
            result = (False, e)
        try:
            put((wid, result))
        except Exception as e:
            wrapped = MaybeEncodingError(e, result[1])
            util.debug("Possible encoding error while sending result: %s" % wrapped)
            put((wid, (False, wrapped)))
        task = result = func = args = kwds = None
    util.debug("worker exiting after %d tasks" % completed)


class _Notifier:
    """The pool's change notifier: ``put`` wakes the thread that watches the workers
    (a byte in a pipe that ``connection.wait`` watches); in-process only."""

    def __init__(self):
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def put(self, obj=None):
        try:
            os.write(self._w, b"\0")
        except (BlockingIOError, OSError):
            pass  # already pending, or closed at shutdown

    def fileno(self):
        return self._r

    def empty(self):
        return not wait([self._r], 0)

    def get(self):
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self):
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._r = self._w = -1

    def __del__(self):
        if getattr(self, "_r", -1) >= 0:
            self.close()


class _Worker:
    """The parent's record of one worker: its process, queue and started cell, and the
    tasks it holds (oldest first), each ``(number, task)``."""

    __slots__ = ("wid", "process", "queue", "started", "held", "sent", "dead", "exitcode")

    def __init__(self, wid, process, inqueue, started):
        self.wid = wid
        self.process = process
        self.queue = inqueue
        self.started = started
        self.held = collections.deque()
        self.sent = 0
        self.dead = False
        self.exitcode = None


class _Dispatcher:
    """The pool's shared state for its three threads (kept apart from the ``Pool`` so
    that the threads do not keep it alive): the workers, which tasks each holds, and the
    result queue."""

    def __init__(self, ctx, Process, processes, pool, outqueue, taskqueue, cache,
                 initializer, initargs, maxtasks, wrap_exception):
        self.ctx = ctx
        self.Process = Process
        self.processes = processes
        self.pool = pool
        self.outqueue = outqueue
        self.taskqueue = taskqueue
        self.cache = cache
        self.initializer = initializer
        self.initargs = initargs
        self.maxtasks = maxtasks
        self.wrap_exception = wrap_exception
        self.workers = {}
        self.next_wid = 0
        # Guards ``workers`` and every worker's ``held``/``sent``.
        self.cond = threading.Condition(threading.Lock())
        # Serialises starting and reaping workers.
        self.membership = threading.RLock()
        self.stopping = False

    # -- workers ------------------------------------------------------------------

    def repopulate(self):
        """Starts workers until there are ``processes`` of them."""
        from .queues import Queue
        from .sharedctypes import RawValue

        with self.membership:
            for _ in range(self.processes - len(self.pool)):
                wid = self.next_wid
                self.next_wid += 1
                inqueue = Queue()
                started = RawValue("q", 0)
                w = self.Process(
                    self.ctx,
                    target=_worker,
                    args=(wid, inqueue, self.outqueue, started, self.initializer,
                          self.initargs, self.maxtasks, self.wrap_exception),
                )
                w.name = w.name.replace("Process", "PoolWorker")
                w.daemon = True
                w.start()
                record = _Worker(wid, w, inqueue, started)
                w._multiproc_wid = wid
                with self.cond:
                    self.workers[wid] = record
                    self.cond.notify_all()
                self.pool.append(w)
                util.debug("added worker")

    def reap(self):
        """Joins the workers that exited; for each, puts a death notice on the result
        queue (behind every result it sent); True if any exited."""
        cleaned = False
        with self.membership:
            for i in reversed(range(len(self.pool))):
                p = self.pool[i]
                if p.exitcode is None:
                    continue
                util.debug("cleaning up worker %d" % i)
                p.join()
                del self.pool[i]
                cleaned = True
                with self.cond:
                    record = self.workers.get(getattr(p, "_multiproc_wid", None))
                    if record is not None:
                        record.dead = True
                        record.exitcode = p.exitcode
                if record is not None:
                    self.outqueue.put((record.wid, None))
        return cleaned

    def maintain(self):
        """Reaps exited workers and starts their replacements."""
        if self.reap() and not self.stopping:
            self.repopulate()

    def sentinels(self):
        with self.membership:
            return [p.sentinel for p in self.pool]

    # -- tasks --------------------------------------------------------------------

    def _free_worker(self):
        """A live worker with room for one more task (the least loaded), or None. The
        caller holds ``cond``."""
        best = None
        for w in self.workers.values():
            if w.dead or len(w.held) >= IN_FLIGHT:
                continue
            if self.maxtasks is not None and w.sent >= self.maxtasks:
                continue
            if best is None or len(w.held) < len(best.held):
                best = w
                if not w.held:
                    break
        return best

    def give(self, task, thread):
        """Gives ``task`` (``(job, i, func, args, kwds)``) to a worker, waiting for room;
        False if the pool is terminating. Raises if the task cannot be pickled."""
        data = dumps(task[2:])
        with self.cond:
            while True:
                if thread._state != RUN:
                    return False
                w = self._free_worker()
                if w is not None:
                    break
                self.cond.wait(0.5)
            w.sent += 1
            w.held.append((w.sent, task))
        # Outside the lock: a put may wait for room in the worker's ring. A worker that
        # died meanwhile has its tasks given to others by the result thread.
        while True:
            try:
                w.queue._put_bytes(data, True, 0.1)
                return True
            except queue.Full:
                if w.dead or thread._state != RUN:
                    return True
            except ValueError:
                return True

    def stop_workers(self):
        """Tells every worker to exit after the tasks it holds."""
        with self.cond:
            workers = list(self.workers.values())
        for w in workers:
            if not w.dead:
                try:
                    w.queue._put_bytes(dumps(None), True, 0.1)
                except (queue.Full, ValueError, OSError):
                    pass

    def wake(self):
        with self.cond:
            self.cond.notify_all()

    # -- results ------------------------------------------------------------------

    def on_message(self, message):
        """Handles one message of the result queue: a result, or a death notice."""
        wid, result = message
        if result is None:
            self._on_death(wid)
            return
        with self.cond:
            w = self.workers.get(wid)
            if w is None or not w.held:
                return
            _, task = w.held.popleft()
            if len(w.held) == IN_FLIGHT - 1:
                self.cond.notify()
        job, i = task[0], task[1]
        task = None
        try:
            self.cache[job]._set(i, result)
        except KeyError:
            pass

    def _on_death(self, wid):
        with self.cond:
            w = self.workers.pop(wid, None)
            if w is None:
                return
            held = list(w.held)
            w.held.clear()
            self.cond.notify_all()
        w.queue.close()
        started = w.started.value
        lost = None
        retry = []
        for number, task in held:
            if number <= started and lost is None:
                lost = task
            else:
                retry.append(task)
        if lost is not None:
            p = w.process
            error = WorkerLostError(
                "worker {} (pid {}) {} while running this task".format(
                    p.name, p.pid, _how(w.exitcode)
                ),
                pid=p.pid,
                name=p.name,
                exitcode=w.exitcode,
            )
            util.debug("%s" % error)
            try:
                self.cache[lost[0]]._set(lost[1], (False, error))
            except KeyError:
                pass
        if retry:
            self.taskqueue.put((retry, None))


class Pool(_std.Pool):
    """``multiprocessing.Pool(processes=None, initializer=None, initargs=(),
    maxtasksperchild=None, context=None)``: the stdlib's API; tasks and results travel
    through this package's queues, and a task whose worker dies fails with
    ``WorkerLostError`` (see the module's documentation)."""

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None,
                 context=None):
        self._pool = []
        self._state = INIT
        if context is None:
            from .context import _default_context

            context = _default_context.get_context()
        self._ctx = context
        self._setup_queues()
        self._taskqueue = queue.SimpleQueue()
        self._change_notifier = _Notifier()
        self._cache = _std._PoolCache(notifier=self._change_notifier)
        self._maxtasksperchild = maxtasksperchild
        self._initializer = initializer
        self._initargs = initargs

        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")

        self._processes = processes
        self._dispatcher = _Dispatcher(
            self._ctx, self.Process, processes, self._pool, self._outqueue,
            self._taskqueue, self._cache, initializer, initargs, maxtasksperchild,
            self._wrap_exception,
        )
        try:
            self._repopulate_pool()
        except Exception:
            for p in self._pool:
                if p.exitcode is None:
                    p.terminate()
            for p in self._pool:
                p.join()
            raise

        self._worker_handler = threading.Thread(
            target=Pool._watch_workers,
            args=(self._dispatcher, self._cache, self._change_notifier),
        )
        self._worker_handler.daemon = True
        self._worker_handler._state = RUN
        self._worker_handler.start()

        self._task_handler = threading.Thread(
            target=Pool._give_tasks, args=(self._dispatcher, self._taskqueue)
        )
        self._task_handler.daemon = True
        self._task_handler._state = RUN
        self._task_handler.start()

        self._result_handler = threading.Thread(
            target=Pool._take_results, args=(self._dispatcher, self._quick_get, self._cache)
        )
        self._result_handler.daemon = True
        self._result_handler._state = RUN
        self._result_handler.start()

        self._terminate = util.Finalize(
            self,
            self._terminate_pool,
            args=(self._taskqueue, self._dispatcher, self._outqueue, self._pool,
                  self._change_notifier, self._worker_handler, self._task_handler,
                  self._result_handler, self._cache),
            exitpriority=15,
        )
        self._state = RUN

    def _setup_queues(self):
        """The shared result queue (this package's ``SimpleQueue``); each worker's task
        queue is made with the worker. There is no shared task queue: ``_inqueue`` and
        ``_quick_put`` are None."""
        from .queues import SimpleQueue

        self._inqueue = None
        self._outqueue = SimpleQueue()
        self._quick_put = None
        self._quick_get = self._outqueue.get

    def _get_sentinels(self):
        return [self._change_notifier]

    def _repopulate_pool(self):
        return self._dispatcher.repopulate()

    @staticmethod
    def _watch_workers(dispatcher, cache, change_notifier):
        """The worker-watching thread: replaces workers that exit (after a notice of the
        death for the result thread), until the pool stops and its tasks are done."""
        thread = threading.current_thread()
        while thread._state == RUN or (cache and thread._state != TERMINATE):
            dispatcher.maintain()
            wait([*dispatcher.sentinels(), change_notifier])
            change_notifier.get()
        dispatcher.stopping = True
        dispatcher.taskqueue.put(None)
        util.debug("worker handler exiting")

    @staticmethod
    def _give_tasks(dispatcher, taskqueue):
        """The task thread: gives each task of each submitted sequence to a worker."""
        thread = threading.current_thread()
        cache = dispatcher.cache
        for taskseq, set_length in iter(taskqueue.get, None):
            task = None
            try:
                for task in taskseq:
                    if thread._state != RUN:
                        util.debug("task handler found thread._state != RUN")
                        break
                    try:
                        if not dispatcher.give(task, thread):
                            break
                    except Exception as e:
                        job, idx = task[:2]
                        try:
                            cache[job]._set(idx, (False, e))
                        except KeyError:
                            pass
                else:
                    if set_length:
                        util.debug("doing set_length()")
                        idx = task[1] if task else -1
                        set_length(idx + 1)
                    continue
                break
            finally:
                task = taskseq = job = None
        else:
            util.debug("task handler got sentinel")

        try:
            util.debug("task handler sending sentinel to result handler")
            dispatcher.outqueue.put(None)
            util.debug("task handler sending sentinel to workers")
            dispatcher.stop_workers()
        except (OSError, ValueError):
            util.debug("task handler got an error when sending sentinels")
        util.debug("task handler exiting")

    @staticmethod
    def _take_results(dispatcher, get, cache):
        """The result thread: completes results and handles death notices, until the
        sentinel came and no task is pending (or the pool terminates)."""
        thread = threading.current_thread()
        while True:
            try:
                message = get()
            except (OSError, EOFError, ValueError):
                util.debug("result handler got an error -- exiting")
                return
            if thread._state != RUN:
                assert thread._state == TERMINATE, "Thread not in TERMINATE"
                util.debug("result handler found thread._state=TERMINATE")
                break
            if message is None:
                util.debug("result handler got sentinel")
                break
            dispatcher.on_message(message)
            message = None

        while cache and thread._state != TERMINATE:
            try:
                message = get()
            except (OSError, EOFError, ValueError):
                util.debug("result handler got an error -- exiting")
                return
            if message is None:
                util.debug("result handler ignoring extra sentinel")
                continue
            dispatcher.on_message(message)
            message = None
        util.debug(
            "result handler exiting: len(cache)=%s, thread._state=%s", len(cache), thread._state
        )

    @staticmethod
    def _help_stuff_finish(dispatcher, task_handler, size):
        """Wakes the task thread if it waits for room in a worker."""
        dispatcher.wake()

    @classmethod
    def _terminate_pool(cls, taskqueue, dispatcher, outqueue, pool, change_notifier,
                        worker_handler, task_handler, result_handler, cache):
        util.debug("finalizing pool")
        worker_handler._state = TERMINATE
        change_notifier.put(None)
        task_handler._state = TERMINATE

        util.debug("helping task handler/workers to finish")
        cls._help_stuff_finish(dispatcher, task_handler, len(pool))

        if (not result_handler.is_alive()) and (len(cache) != 0):
            raise AssertionError("Cannot have cache with result_handler not alive")

        result_handler._state = TERMINATE
        change_notifier.put(None)
        outqueue.put(None)

        util.debug("joining worker handler")
        if threading.current_thread() is not worker_handler:
            worker_handler.join()

        if pool and hasattr(pool[0], "terminate"):
            util.debug("terminating workers")
            for p in pool:
                if p.exitcode is None:
                    p.terminate()

        util.debug("joining task handler")
        if threading.current_thread() is not task_handler:
            task_handler.join()

        util.debug("joining result handler")
        if threading.current_thread() is not result_handler:
            result_handler.join()

        if pool and hasattr(pool[0], "terminate"):
            util.debug("joining pool workers")
            for p in pool:
                if p.is_alive():
                    util.debug("cleaning up worker %d" % p.pid)
                    p.join()
