"""``multiprocessing.Pool`` with its tasks and results on this package's queues, and a
worker that dies mid-task failing that task instead of hanging the pool.

``Pool`` subclasses the stdlib's ``multiprocessing.pool.Pool``: the public methods,
``ApplyResult``, ``MapResult``, ``IMapIterator``, the chunking and the error wrapping
(``RemoteTraceback``, ``MaybeEncodingError``) are the stdlib's own. What this module
replaces is the traffic and the bookkeeping under them (the stdlib's ``__init__`` starts
its threads on the stdlib's own handler functions, so ``__init__`` and the handlers are
overridden; ``_inqueue``, ``_quick_put`` and the pipes' ``_reader``/``_rlock`` that the
stdlib's handlers reach into do not exist here):

- each worker has its own task queue (this package's ``Queue``, on the shared-memory
  ring); all workers send results through one shared result queue (a ``SimpleQueue``);
- the parent gives a worker a bounded number of tasks at a time (``_Dispatcher``): about
  ``QUEUED_WORK`` seconds of work, from the time tasks have taken so far, so one at a
  time when tasks are long and up to ``MAX_IN_FLIGHT`` when they take microseconds.
  Short tasks travel in batches (one message carries many tasks, one message brings
  their results back); long ones, and ``map``'s chunks, one per message;
- the parent keeps each task until its result arrives, so it knows which tasks every
  worker holds; before running a task, a worker writes the task's number into a shared
  cell of its own (``RawValue``); a worker's results reach the parent in the order it ran
  its tasks.

When a worker dies (SIGKILL, ``os._exit``, a crash, anything), the thread that watches
the workers' sentinels puts a notice of the death on the result queue, behind every
result the worker sent. The thread that reads results then reads the dead worker's
cell: the task whose number is there was running, and fails with ``WorkerLostError``
naming the worker, its pid and how it died; every other task the worker held goes to
other workers (those it had not started, and those of its last batch that it had run
without sending their results yet: such a task runs twice). The cell is written before a
task's function is called, so a death at any instruction leaves each task either failed
(it may have run) or given to another worker. A new worker replaces the dead one, and
the pool goes on. (The stdlib's pool waits for ever here, bpo-22393.)

Differences from the stdlib's pool: a worker is given a few tasks at a time instead of
taking them from one shared pipe, so a task may wait behind a long one on a busy worker
while another worker is free (at most the few that worker holds: one, once tasks are
seen to be long); ``imap`` takes its input one item at a time as the stdlib does.
``ThreadPool`` is the stdlib's.
"""

import collections
import io
import itertools
import os
import queue
import signal
import struct
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

from ._pickle import dump_into, dumps, loads

__all__ = ["Pool", "ThreadPool", "WorkerLostError", "AsyncResult"]

#: Bounds on how many tasks a worker holds at once (running and waiting in its queue).
#: Between them, the pool keeps about ``QUEUED_WORK`` seconds of work per worker, from
#: the time its tasks have taken so far: one task at a time when tasks are long, many
#: (sent and answered in batches) when they take microseconds.
MIN_IN_FLIGHT = 1
MAX_IN_FLIGHT = 128
QUEUED_WORK = 0.01
#: Tasks shorter than this (seconds, on average) travel in batches; longer ones (and
#: chunks of ``map``, which are batches already) one per message, so that each result
#: comes back as soon as it is ready.
BATCH_BELOW = 0.0001

#: After this many workers in a row died before running any task (an initializer that
#: fails, say), the tasks that the dead ones held fail instead of going to the next.
FAILED_STARTS = 5

#: A task message: the number of its first task and how many tasks follow (pickled).
_HEADER = struct.Struct("<qq")


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
    """A pool worker: runs the task batches of its own queue in order, writes each task's
    number into ``started`` before running it, and sends ``(wid, [(success, value), ...])``
    per batch (``(wid, exception)`` for a batch that cannot be unpickled here)."""
    get = inqueue._get_bytes
    put = outqueue.put
    if initializer is not None:
        initializer(*initargs)
    completed = 0
    while maxtasks is None or completed < maxtasks:
        try:
            data = get(True, None)
        except (EOFError, OSError, ValueError):
            util.debug("worker's queue is gone -- exiting")
            break
        first, count = _HEADER.unpack_from(data)
        if count == 0:
            util.debug("worker got sentinel -- exiting")
            break
        completed += count
        try:
            tasks = loads(memoryview(data)[_HEADER.size :])
        except Exception as e:
            _send(put, wid, e)
            continue
        data = None
        results = []
        number = first
        for func, args, kwds in tasks:
            started.value = number
            number += 1
            try:
                result = (True, func(*args, **kwds))
            except Exception as e:
                if wrap_exception and func is not _std._helper_reraises_exception:
                    e = ExceptionWithTraceback(e, e.__traceback__)
                result = (False, e)
            results.append(result)
            result = None
        tasks = func = args = kwds = None
        _send(put, wid, results)
        results = None
    util.debug("worker exiting after %d tasks" % completed)


def _send(put, wid, results):
    """Sends a batch's results; those that cannot be pickled become MaybeEncodingError."""
    try:
        put((wid, results))
        return
    except Exception as e:
        if not isinstance(results, list):
            put((wid, MaybeEncodingError(e, results)))
            return
    fixed = []
    for result in results:
        try:
            dumps(result)
            fixed.append(result)
        except Exception as e:
            wrapped = MaybeEncodingError(e, result[1])
            util.debug("Possible encoding error while sending result: %s" % wrapped)
            fixed.append((False, wrapped))
    put((wid, fixed))


def _encode(first, tasks):
    """The message for ``tasks`` (each ``(job, i, func, args, kwds)``) numbered from
    ``first``; raises if one cannot be pickled."""
    buf = io.BytesIO()
    buf.write(_HEADER.pack(first, len(tasks)))
    dump_into(buf, [task[2:] for task in tasks])
    return buf.getbuffer()


#: The message that tells a worker to exit.
_SENTINEL = _HEADER.pack(0, 0)


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
    batches it holds (oldest first), each ``[first number, tasks, time sent]``."""

    __slots__ = (
        "wid", "process", "queue", "started", "held", "held_count", "next_number", "sent",
        "last_result", "dead", "exitcode",
    )

    def __init__(self, wid, process, inqueue, started):
        self.wid = wid
        self.process = process
        self.queue = inqueue
        self.started = started
        self.held = collections.deque()
        self.held_count = 0
        self.next_number = 1
        self.sent = 0
        self.last_result = 0.0
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
        # Guards ``workers``, every worker's bookkeeping, ``depth`` and ``waiting``.
        self.cond = threading.Condition(threading.Lock())
        # Serialises starting and reaping workers.
        self.membership = threading.RLock()
        self.stopping = False
        # The average time a task has taken (seconds), and the tasks a worker may hold.
        self.task_time = QUEUED_WORK / 4
        self.depth = 4
        self.waiting = False
        # Workers in a row that died before running any task.
        self.failed_starts = 0

    # -- workers ------------------------------------------------------------------

    def repopulate(self):
        """Starts workers until there are ``processes`` of them."""
        from .queues import Queue, SimpleQueue
        from .sharedctypes import RawValue

        with self.membership:
            for _ in range(self.processes - len(self.pool)):
                wid = self.next_wid
                self.next_wid += 1
                inqueue = Queue()
                started = RawValue("q", 0)
                # The worker's own handle on the result queue: a forked worker inherits
                # this one, which no other thread of this process has used (it could
                # otherwise inherit the handle locked by the result thread's get).
                outqueue = SimpleQueue(fd=self.outqueue.export_fd())
                w = self.Process(
                    self.ctx,
                    target=_worker,
                    args=(wid, inqueue, outqueue, started, self.initializer,
                          self.initargs, self.maxtasks, self.wrap_exception),
                )
                w.name = w.name.replace("Process", "PoolWorker")
                w.daemon = True
                try:
                    w.start()
                finally:
                    outqueue.close()
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

    def _room(self, w):
        """How many more tasks ``w`` may take now. The caller holds ``cond``."""
        if w.dead:
            return 0
        room = self.depth - w.held_count
        if self.maxtasks is not None:
            room = min(room, self.maxtasks - w.sent)
        return room

    def wait_for_room(self, thread):
        """The worker with the most room, and how many tasks to send it in one batch (at
        most half the depth, so that a worker's next batch is sent while it runs this
        one; one if tasks are long), waiting for a worker to have room; ``(None, 0)`` if
        the pool terminates meanwhile."""
        with self.cond:
            while True:
                if thread._state != RUN:
                    return None, 0
                best, room = None, 0
                for w in self.workers.values():
                    r = self._room(w)
                    if r > room:
                        best, room = w, r
                if best is not None:
                    if self.task_time >= BATCH_BELOW:
                        return best, 1
                    return best, min(room, max(1, self.depth // 2))
                self.waiting = True
                self.cond.wait(0.5)
                self.waiting = False

    def give(self, w, tasks, thread):
        """Gives ``tasks`` (each ``(job, i, func, args, kwds)``) to worker ``w``. A task
        that cannot be pickled fails at once."""
        with self.cond:
            first = w.next_number
            w.next_number += len(tasks)
            w.sent += len(tasks)
            w.held_count += len(tasks)
            entry = [first, tasks, time.monotonic()]
            w.held.append(entry)
        try:
            data = _encode(first, tasks)
        except Exception:
            data = self._encode_picklable(w, entry)
            if data is None:
                return
        # Outside the lock: a put may wait for room in the worker's ring. A worker that
        # died meanwhile has its tasks given to others by the result thread.
        while True:
            try:
                w.queue._put_bytes(data, True, 0.1)
                return
            except queue.Full:
                if w.dead or thread._state != RUN:
                    return
            except (ValueError, OSError):
                return

    def _encode_picklable(self, w, entry):
        """Fails the tasks of ``entry`` that cannot be pickled and keeps the others in
        it; their message, or None if none is left."""
        first, tasks, _ = entry
        good = []
        for task in tasks:
            try:
                dumps(task[2:])
                good.append(task)
            except Exception as e:
                try:
                    self.cache[task[0]]._set(task[1], (False, e))
                except KeyError:
                    pass
        with self.cond:
            w.held_count -= len(tasks) - len(good)
            entry[1] = good
            if not good and entry in w.held:
                w.held.remove(entry)
        return _encode(first, good) if good else None

    def stop_workers(self):
        """Tells every worker to exit after the tasks it holds."""
        with self.cond:
            workers = list(self.workers.values())
        for w in workers:
            if not w.dead:
                try:
                    w.queue._put_bytes(_SENTINEL, True, 0.1)
                except (queue.Full, ValueError, OSError):
                    pass

    def wake(self):
        with self.cond:
            self.cond.notify_all()

    # -- results ------------------------------------------------------------------

    def on_message(self, message):
        """Handles one message of the result queue: a batch's results, or a death
        notice."""
        wid, results = message
        if results is None:
            self._on_death(wid)
            return
        now = time.monotonic()
        with self.cond:
            w = self.workers.get(wid)
            if w is None or not w.held:
                return
            _, tasks, sent_at = w.held.popleft()
            w.held_count -= len(tasks)
            # The time the batch took, from when the worker could start it.
            took = (now - max(sent_at, w.last_result)) / max(1, len(tasks))
            w.last_result = now
            self.task_time += (took - self.task_time) / 4
            self.depth = max(
                MIN_IN_FLIGHT, min(MAX_IN_FLIGHT, int(QUEUED_WORK / max(self.task_time, 1e-7)))
            )
            if self.waiting:
                self.cond.notify()
        self.failed_starts = 0
        if not isinstance(results, list):
            results = [(False, results)] * len(tasks)
        cache = self.cache
        for task, result in zip(tasks, results):
            try:
                cache[task[0]]._set(task[1], result)
            except KeyError:
                pass
        tasks = results = task = result = None

    def _on_death(self, wid):
        with self.cond:
            w = self.workers.pop(wid, None)
            if w is None:
                return
            held = list(w.held)
            w.held.clear()
            w.held_count = 0
            self.cond.notify_all()
        w.queue.close()
        started = w.started.value
        p = w.process
        if started == 0 and w.exitcode != 0:
            self.failed_starts += 1
        else:
            self.failed_starts = 0
        if self.failed_starts >= FAILED_STARTS:
            # Workers keep dying before they run anything: fail what this one held.
            error = WorkerLostError(
                "worker {} (pid {}) {} before running any task, as did the {} workers "
                "started before it (does the initializer fail?)".format(
                    p.name, p.pid, _how(w.exitcode), self.failed_starts - 1
                ),
                pid=p.pid,
                name=p.name,
                exitcode=w.exitcode,
            )
            for _, tasks, _ in held:
                for task in tasks:
                    self._fail(task, error)
            return
        lost = None
        retry = []
        for first, tasks, _ in held:
            for number, task in enumerate(tasks, first):
                if number == started:
                    lost = task
                else:
                    # Not started, or run without its result sent: it runs elsewhere.
                    retry.append(task)
        if lost is not None:
            error = WorkerLostError(
                "worker {} (pid {}) {} while running this task".format(
                    p.name, p.pid, _how(w.exitcode)
                ),
                pid=p.pid,
                name=p.name,
                exitcode=w.exitcode,
            )
            util.debug("%s" % error)
            self._fail(lost, error)
        if retry:
            self.taskqueue.put((retry, None))

    def _fail(self, task, error):
        """Fails ``task`` with ``error``."""
        try:
            self.cache[task[0]]._set(task[1], (False, error))
        except KeyError:
            pass


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
        """The task thread: gives the tasks of each submitted sequence to the workers, in
        batches for ``map`` and friends (whose input is in memory already), one by one
        for ``imap`` (whose input may come slowly)."""
        thread = threading.current_thread()
        batches = dispatcher.maxtasks is None
        for taskseq, set_length in iter(taskqueue.get, None):
            task = None
            tasks = iter(taskseq)
            batch = None
            try:
                given = False  # the whole sequence was given out
                while thread._state == RUN:
                    if batches and set_length is None:
                        w, room = dispatcher.wait_for_room(thread)
                        if w is None:
                            break
                        batch = list(itertools.islice(tasks, room))
                        if not batch:
                            given = True
                            break
                    else:
                        batch = list(itertools.islice(tasks, 1))
                        if not batch:
                            given = True
                            break
                        w, _ = dispatcher.wait_for_room(thread)
                        if w is None:
                            break
                    task = batch[-1]
                    dispatcher.give(w, batch, thread)
                    batch = None
                if given:
                    if set_length:
                        util.debug("doing set_length()")
                        idx = task[1] if task else -1
                        set_length(idx + 1)
                    continue
                util.debug("task handler found thread._state != RUN")
                break
            finally:
                task = taskseq = tasks = batch = None
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
