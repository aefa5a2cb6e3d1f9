"""The CPython side of `multiprocessing bench` (stdlib only).

`multiproc bench` writes this file to a temporary path and runs it with python3. It
prints one JSON line describing the interpreter, then answers requests: one JSON object
per line on stdin, one JSON object per line on stdout ({"value": [x, ops, wall, cpu]} or
{"error": "..."}): the row's figure, the operations and wall seconds of the timed window,
and the CPU seconds (user + system) of every participating process in it (or null).
The file must stay importable without side effects, because the 'spawn' start method
imports it again in every child.
"""

import json
import multiprocessing as mp
import os
import resource
import sys
import time

cpu_now = time.process_time  # this process, all its threads


def pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def self_and_children():
    """CPU seconds of this process and of its reaped children."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def pid_cpu(pid):
    """CPU seconds process pid has run: its live threads' /proc schedstat."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
            total += int(f.read().split()[0])
    return total * 1e-9


# --------------------------------------------------------------------------------------
# Child targets (module level, so that every start method can find them)


def _echo(conn, n, warm, cpu):
    pin(cpu)
    conn.send_bytes(b"r")
    recv, send = conn.recv_bytes, conn.send_bytes
    for _ in range(warm):
        send(recv())
    c0 = cpu_now()
    for _ in range(n):
        send(recv())
    conn.send(cpu_now() - c0)


def _sink_values(conn, n, cpu):
    pin(cpu)
    conn.send_bytes(b"r")
    c0 = cpu_now()
    recv = conn.recv
    for _ in range(n):
        recv()
    conn.send(cpu_now() - c0)  # done, with this process's CPU seconds


def _sink_bytes(conn, n, size, cpu):
    pin(cpu)
    conn.send_bytes(b"r")
    c0 = cpu_now()
    recv = conn.recv_bytes
    for _ in range(n):
        if len(recv()) != size:
            raise SystemExit(3)
    conn.send(cpu_now() - c0)


def _noop():
    pass


def _incr_locked(v, go, conn, n, cpu):
    pin(cpu)
    conn.send_bytes(b"r")
    go.wait()
    c0 = cpu_now()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    conn.send(cpu_now() - c0)


# --------------------------------------------------------------------------------------
# Workloads


def _with_child(method, target, extra, pcpu, ccpu, body):
    """Runs target(conn, *extra, ccpu) in a child, waits for its ready message with this
    process pinned to pcpu, and returns body(parent_conn). The child is always reaped."""
    ctx = mp.get_context(method)
    parent, child = ctx.Pipe(True)
    p = ctx.Process(target=target, args=(child,) + tuple(extra) + (ccpu,))
    saved = os.sched_getaffinity(0)
    p.start()
    child.close()
    try:
        pin(pcpu)
        if parent.recv_bytes() != b"r":
            raise RuntimeError("unexpected ready message")
        result = body(parent)
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError("child exited with %r" % (p.exitcode,))
        return result
    finally:
        os.sched_setaffinity(0, saved)
        parent.close()
        if p.is_alive():
            p.kill()
        p.join()


def pingpong(n, warm, size, pcpu, ccpu, method, pause=0.0):
    """us per round trip; with a pause (seconds) before each, timed one by one."""
    msg = b"\x5a" * size
    perf, sleep = time.perf_counter, time.sleep

    def body(conn):
        send, recv = conn.send_bytes, conn.recv_bytes
        for _ in range(warm):
            if pause:
                sleep(pause)
            send(msg)
            recv()
        c0 = cpu_now()
        if pause:
            wall = 0.0
            for _ in range(n):
                sleep(pause)
                t = perf()
                send(msg)
                recv()
                wall += perf() - t
        else:
            t0 = perf()
            for _ in range(n):
                send(msg)
                recv()
            wall = perf() - t0
        cpu = cpu_now() - c0 + conn.recv()
        return wall / n * 1e6, n, wall, cpu

    return _with_child(method, _echo, (n, warm), pcpu, ccpu, body)


def tput(n, size, api, pcpu, ccpu, method):
    msg = b"\x5a" * size
    if api == "send":
        target, extra = _sink_values, (n,)
    else:
        target, extra = _sink_bytes, (n, size)

    def body(conn):
        send = conn.send if api == "send" else conn.send_bytes
        t0, c0 = time.perf_counter(), cpu_now()
        for _ in range(n):
            send(msg)
        child_cpu = conn.recv()
        wall = time.perf_counter() - t0
        return n / wall, n, wall, cpu_now() - c0 + child_cpu

    return _with_child(method, target, extra, pcpu, ccpu, body)


def send_bytes(count, size, pcpu, ccpu, method):
    buf = b"\x5a" * size

    def body(conn):
        t0, c0 = time.perf_counter(), cpu_now()
        for _ in range(count):
            conn.send_bytes(buf)
        child_cpu = conn.recv()
        wall = time.perf_counter() - t0
        return count * size / wall / 1e9, count, wall, cpu_now() - c0 + child_cpu

    return _with_child(method, _sink_bytes, (count, size), pcpu, ccpu, body)


def start_join(k, method, ballast_mib=0):
    ctx = mp.get_context(method)
    ballast = b"\x01" * (ballast_mib << 20)  # touched memory in the parent
    t0, c0 = time.perf_counter(), self_and_children()
    for _ in range(k):
        p = ctx.Process(target=_noop)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise RuntimeError("child exited with %r" % (p.exitcode,))
    elapsed = time.perf_counter() - t0
    # A forkserver's children are its own, not ours: their CPU time is not counted.
    cpu = None if ctx.get_start_method() == "forkserver" else self_and_children() - c0
    del ballast
    return elapsed / k * 1e3, k, elapsed, cpu


def value_incr_2proc(n, cpus, method):
    """Increments/s of `with v.get_lock(): v.value += 1` on Value('i') by two processes,
    each pinned to one of `cpus`, timed from a common start Event to the last one done."""
    ctx = mp.get_context(method)
    v = ctx.Value("i", 0)
    go = ctx.Event()
    conns, procs = [], []
    try:
        for cpu in cpus:
            parent, child = ctx.Pipe(True)
            p = ctx.Process(target=_incr_locked, args=(v, go, child, n, cpu))
            p.start()
            child.close()
            conns.append(parent)
            procs.append(p)
        for c in conns:
            if c.recv_bytes() != b"r":
                raise RuntimeError("unexpected ready message")
        t0, c0 = time.perf_counter(), cpu_now()
        go.set()
        cpu = sum(c.recv() for c in conns)
        elapsed = time.perf_counter() - t0
        cpu += cpu_now() - c0
        for p in procs:
            p.join(60)
            if p.exitcode != 0:
                raise RuntimeError("child exited with %r" % (p.exitcode,))
        if v.value != 2 * n:
            raise RuntimeError("lost updates: %d, not %d" % (v.value, 2 * n))
        return 2 * n / elapsed, 2 * n, elapsed, cpu
    finally:
        for c in conns:
            c.close()
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()


def lock_uncontended(n):
    """ns per acquire + release of an uncontended multiprocessing.Lock."""
    lock = mp.Lock()
    acquire, release = lock.acquire, lock.release
    for _ in range(min(n, 10000)):
        acquire()
        release()
    t0, c0 = time.perf_counter(), cpu_now()
    for _ in range(n):
        acquire()
        release()
    wall = time.perf_counter() - t0
    return wall / n * 1e9, n, wall, cpu_now() - c0


def shm_fill(reps, size):
    """GB/s of setting every double of a fresh SharedMemory block to 1.5, reps times. The
    fastest stdlib way: slice assignment of a prebuilt array('d') to a 'd' cast of
    shm.buf (a memcpy; without NumPy there is no fill for doubles)."""
    from array import array
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=size)
    try:
        view = shm.buf.cast("d")
        try:
            src = array("d", [1.5]) * (size // 8)
            view[:] = array("d", bytes(size))  # touch every page before timing
            t0, c0 = time.perf_counter(), cpu_now()
            for _ in range(reps):
                view[:] = src
            elapsed = time.perf_counter() - t0
            cpu = cpu_now() - c0
            if view[0] != 1.5 or view[-1] != 1.5:
                raise RuntimeError("the block does not hold the value written")
        finally:
            view.release()
    finally:
        shm.close()
        shm.unlink()
    return reps * size / elapsed / 1e9, reps, elapsed, cpu


# --------------------------------------------------------------------------------------
# Queues: every producer and consumer in a process of its own, timed from a common start
# Event to the last one done (process start-up untimed)


def _q_ready(go, conn, cpu):
    """Pins, reports ready, waits for the start; returns this process's CPU seconds."""
    pin(cpu)
    conn.send_bytes(b"r")
    go.wait()
    return cpu_now()


def _q_put(go, conn, cpu, q, n, item, warm=0):
    for _ in range(warm):
        q.put(item)
    c0 = _q_ready(go, conn, cpu)
    put = q.put
    for _ in range(n):
        put(item)
    conn.send((0.0, cpu_now() - c0))


def _q_get(go, conn, cpu, q, n, item, warm=0):
    for _ in range(warm):
        q.get()
    c0 = _q_ready(go, conn, cpu)
    get = q.get
    got = None
    for _ in range(n):
        got = get()
    if got != item:
        raise SystemExit(3)
    conn.send((0.0, cpu_now() - c0))


def _q_echo(go, conn, cpu, out, back, n, warm):
    _q_ready(go, conn, cpu)
    get, put = out.get, back.put
    for _ in range(warm):
        put(get())
    c0 = cpu_now()
    for _ in range(n):
        put(get())
    conn.send((0.0, cpu_now() - c0))


def _q_ping(go, conn, cpu, out, back, n, warm, item, pause):
    _q_ready(go, conn, cpu)
    get, put = back.get, out.put
    perf, sleep = time.perf_counter, time.sleep
    for _ in range(warm):
        if pause:
            sleep(pause)
        put(item)
        get()
    c0 = cpu_now()
    if pause:
        wall = 0.0
        for _ in range(n):
            sleep(pause)
            t = perf()
            put(item)
            get()
            wall += perf() - t
    else:
        t0 = perf()
        for _ in range(n):
            put(item)
            get()
        wall = perf() - t0
    conn.send((wall, cpu_now() - c0))


def _q_team(ctx, workers):
    """Starts target(go, conn, cpu, *args) for each (target, cpu, args), waits until all
    are ready, sets go, and returns (seconds until the last one is done, the seconds each
    sent, the CPU seconds of all of them and of this process)."""
    go = ctx.Event()
    conns, procs = [], []
    try:
        for target, cpu, args in workers:
            parent, child = ctx.Pipe(True)
            p = ctx.Process(target=target, args=(go, child, cpu) + tuple(args))
            p.start()
            child.close()
            conns.append(parent)
            procs.append(p)
        for c in conns:
            if c.recv_bytes() != b"r":
                raise RuntimeError("unexpected ready message")
        t0, c0 = time.perf_counter(), cpu_now()
        go.set()
        reported = [c.recv() for c in conns]
        elapsed = time.perf_counter() - t0
        cpu = sum(r[1] for r in reported) + cpu_now() - c0
        for p in procs:
            p.join(60)
            if p.exitcode != 0:
                raise RuntimeError("child exited with %r" % (p.exitcode,))
        return elapsed, [r[0] for r in reported], cpu
    finally:
        for c in conns:
            c.close()
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()


def queue_tput(n, item, size, queue, pcpus, ccpus, gbps, method, warm=0):
    """Items/s (GB/s with gbps) of n items through multiprocessing.Queue or SimpleQueue,
    len(pcpus) producers and as many consumers, each moving n // k items (after `warm`
    untimed ones)."""
    ctx = mp.get_context(method)
    q = ctx.Queue() if queue == "Queue" else ctx.SimpleQueue()
    obj = b"\x5a" * size if item == "bytes" else (1, "abc", 2.5)
    k = len(pcpus)
    n = n // k * k
    try:
        workers = [(_q_get, cpu, (q, n // k, obj, warm)) for cpu in ccpus]
        workers += [(_q_put, cpu, (q, n // k, obj, warm)) for cpu in pcpus]
        elapsed, _, cpu = _q_team(ctx, workers)
    finally:
        q.close()
    return (n * size / elapsed / 1e9 if gbps else n / elapsed), n, elapsed, cpu


def queue_pingpong(n, warm, size, pcpu, ccpu, method, pause=0.0):
    """us per round trip of a size-byte item out on one Queue and back on another (with a
    pause in seconds before each, excluded from the time)."""
    ctx = mp.get_context(method)
    out, back = ctx.Queue(), ctx.Queue()
    try:
        workers = [
            (_q_echo, ccpu, (out, back, n, warm)),
            (_q_ping, pcpu, (out, back, n, warm, b"\x5a" * size, pause)),
        ]
        _, reported, cpu = _q_team(ctx, workers)
    finally:
        out.close()
        back.close()
    return reported[1] / n * 1e6, n, reported[1], cpu


def _pool_inc(x):
    return x + 1


def pool_tasks(n, chunksize, processes):
    """us per task of Pool(processes).map(_pool_inc, range(n), chunksize) (None: CPython's
    default chunk size), the pool started and warmed up untimed."""
    with mp.Pool(processes) as pool:
        pool.map(_pool_inc, range(1000), chunksize)
        pids = [p.pid for p in pool._pool]
        t0, c0, w0 = time.perf_counter(), cpu_now(), sum(map(pid_cpu, pids))
        out = pool.map(_pool_inc, range(n), chunksize)
        elapsed = time.perf_counter() - t0
        cpu = cpu_now() - c0 + sum(map(pid_cpu, pids)) - w0
    if len(out) != n or (n and out[-1] != n):
        raise RuntimeError("pool.map gave wrong results")
    return elapsed / n * 1e6, n, elapsed, cpu


def pool_startup(k, processes):
    """ms from Pool(processes) to its first apply() returning; teardown untimed."""
    total = cpu = 0.0
    for _ in range(k):
        t0, c0 = time.perf_counter(), cpu_now()
        pool = mp.Pool(processes)
        try:
            if pool.apply(_pool_inc, (41,)) != 42:
                raise RuntimeError("apply gave a wrong result")
            total += time.perf_counter() - t0
            cpu += cpu_now() - c0 + sum(pid_cpu(p.pid) for p in pool._pool)
        finally:
            pool.terminate()
            pool.join()
    return total / k * 1e3, k, total, cpu


OPS = {
    "pingpong": pingpong,
    "tput": tput,
    "send_bytes": send_bytes,
    "start_join": start_join,
    "value_incr_2proc": value_incr_2proc,
    "lock_uncontended": lock_uncontended,
    "shm_fill": shm_fill,
    "queue_tput": queue_tput,
    "queue_pingpong": queue_pingpong,
    "pool_tasks": pool_tasks,
    "pool_startup": pool_startup,
}


def main():
    out = sys.stdout
    hello = {
        "version": sys.version.split()[0],
        "default_method": mp.get_start_method(),
        "methods": mp.get_all_start_methods(),
    }
    out.write(json.dumps(hello) + "\n")
    out.flush()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            answer = {"value": OPS[req["op"]](**req["args"])}
        except BaseException as e:  # report, keep serving
            answer = {"error": "%s: %s" % (type(e).__name__, e)}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
